"""AutoCrane itself on the local control plane: what `make dev` runs beside the cluster.

The programs run as local processes (there are no images to pull here):

- the injector webhook on 127.0.0.1 with a certificate from the cluster CA, registered by URL for
  as long as it runs;
- the controller, probing watchdogs and evicting within PodDisruptionBudgets in the demo namespace;
- a stand-in for the kubelet's one job that matters here: KWOK marks pods Running but runs
  nothing, so for every Running sample pod the sample app (``autocrane testworkload``) is started
  on the pod's own IP. ``curl -X POST http://POD_IP:8080/fail`` makes its watchdog fail; the
  controller records it and, after a while, evicts and replaces the pod.

A demo namespace opted in to injection gets the sample Deployment and a PodDisruptionBudget.
Programs are started as ``python -m autocrane ...``: the core never imports an area, it only runs
its commands.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from devcluster import certs, controlplane

DEMO_NAMESPACE = "demo"
WEBHOOK_CONFIGURATION = "autocrane-injector"
APP_PORT = 8080


def _sample_deployment() -> dict[str, object]:
    labels = {"app": "sample"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sample"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "data.autocrane.io/model": "models",
                    "watchdoghealthz.autocrane.io/min-ready-seconds": "10",
                    "probe.autocrane.io/app": f"POD_IP:{APP_PORT}/watchdog",
                }},
                "spec": {"containers": [{"name": "app", "image": "autocrane/sidecar:0.1.0",
                                         "args": ["testworkload", "--data-path", "/autocrane/data/model"]}]},
            },
        },
    }


def _autocrane_command() -> str:
    """How to call ``autocrane`` from another shell: the script beside this interpreter, if any."""
    script = Path(sys.executable).parent / "autocrane"
    return str(script) if script.exists() else "autocrane"


class Stack:
    """The AutoCrane processes beside a running :class:`controlplane.ControlPlane`."""

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        self.plane = plane
        self.directory = plane.directory / "autocrane"
        self.directory.mkdir(exist_ok=True)
        self.webhook_port = controlplane.free_port()
        self.webhook_health_port = controlplane.free_port()
        self.controller_health_port = controlplane.free_port()
        self.apps: dict[str, subprocess.Popen[bytes]] = {}
        """Sample-app processes by pod UID."""
        self._stop = threading.Event()
        self._runner: threading.Thread | None = None

    def start(self) -> None:
        cert, key = self.directory / "webhook.crt", self.directory / "webhook.key"
        certs.issue_loopback_serving_cert(self.plane.pki, cert, key)
        self.plane.spawn_program("autocrane-webhook", [
            sys.executable, "-m", "autocrane", "webhook", "--host", "127.0.0.1",
            "--port", str(self.webhook_port), "--health-port", str(self.webhook_health_port),
            "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--log-format", "text",
            "--kubeconfig", str(self.plane.kubeconfig), "--namespace", "autocrane-system",
            "--webhook-config-name", WEBHOOK_CONFIGURATION,
            "--register-url", f"https://127.0.0.1:{self.webhook_port}/mutate",
            "--register-ca-file", str(self.plane.pki.ca_cert), "--drain-delay", "0",
        ])
        self.plane.wait("the webhook's /readyz",
                        lambda: self.plane.http_ok(f"http://127.0.0.1:{self.webhook_health_port}/readyz"))
        self.plane.wait("the webhook's registration", lambda: self.plane.get(
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}")
            is not None)
        self.plane.spawn_program("autocrane-controller", [
            sys.executable, "-m", "autocrane", "controller", "--kubeconfig", str(self.plane.kubeconfig),
            "--namespace", DEMO_NAMESPACE, "--no-leader-elect", "--interval", "5", "--min-pod-age", "30",
            "--health-host", "127.0.0.1", "--health-port", str(self.controller_health_port), "--log-format", "text",
        ])
        self._deploy_sample()
        self._runner = threading.Thread(target=self._run_apps, name="pod-apps", daemon=True)
        self._runner.start()

    def stop(self) -> None:
        """Stop the sample apps (the processes of the control plane are stopped by it)."""
        self._stop.set()
        if self._runner is not None:
            self._runner.join(timeout=10)
        for app in self.apps.values():
            if app.poll() is None:
                app.terminate()
        for app in self.apps.values():
            try:
                app.wait(timeout=10)
            except subprocess.TimeoutExpired:
                app.kill()
        self.apps.clear()

    def _run_apps(self) -> None:
        """Keep one sample app per Running sample pod, on the pod's IP; stop those of pods gone."""
        log = (self.plane.logs / "sample-apps.log").open("ab")
        try:
            while not self._stop.wait(1.0):
                listing = self.plane.get(f"/api/v1/namespaces/{DEMO_NAMESPACE}/pods?labelSelector=app%3Dsample")
                running = {p["metadata"]["uid"]: p["status"]["podIP"] for p in (listing or {}).get("items", [])
                           if p["status"].get("phase") == "Running" and p["status"].get("podIP")
                           and not p["metadata"].get("deletionTimestamp")}
                for uid in set(self.apps) - set(running):
                    self.apps.pop(uid).terminate()
                for uid, ip in running.items():
                    if uid not in self.apps:
                        self.apps[uid] = subprocess.Popen(
                            [sys.executable, "-m", "autocrane", "testworkload", "--host", ip, "--port", str(APP_PORT),
                             "--log-format", "text"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except controlplane.ControlPlaneError:
            pass  # the cluster is going away
        finally:
            log.close()

    def _deploy_sample(self) -> None:
        self.plane.create("/api/v1/namespaces", {"metadata": {"name": DEMO_NAMESPACE,
                                                              "labels": {"autocrane-inject": "enabled"}}})
        sa = f"/api/v1/namespaces/{DEMO_NAMESPACE}/serviceaccounts/default"
        self.plane.wait("ServiceAccount demo/default", lambda: self.plane.get(sa) is not None)
        self.plane.create(f"/apis/apps/v1/namespaces/{DEMO_NAMESPACE}/deployments", _sample_deployment())
        budget = {"minAvailable": 2, "selector": {"matchLabels": {"app": "sample"}}}
        self.plane.create(f"/apis/policy/v1/namespaces/{DEMO_NAMESPACE}/poddisruptionbudgets",
                          {"metadata": {"name": "sample"}, "spec": budget})

    def summary(self) -> str:
        return (f"injector webhook: https://127.0.0.1:{self.webhook_port}/mutate "
                f"(metrics http://127.0.0.1:{self.webhook_health_port}/metrics)\n"
                f"controller: metrics http://127.0.0.1:{self.controller_health_port}/metrics\n"
                f"sample: namespace '{DEMO_NAMESPACE}' (label autocrane-inject=enabled), Deployment 'sample' "
                "with injected containers, a PodDisruptionBudget, and the sample app on each pod's IP.\n"
                f"  make a watchdog fail:  curl -X POST http://POD_IP:{APP_PORT}/fail\n"
                f"  watch what happens:    {_autocrane_command()} status -n {DEMO_NAMESPACE}")

