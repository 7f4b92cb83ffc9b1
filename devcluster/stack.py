"""AutoCrane as local processes beside a cluster without the real node (KWOK only), and the sample app.

`make dev` installs the chart on the real node (:mod:`devcluster.helmstack`). Where the real node
cannot run (not Linux, not root), it falls back to this: the programs run as local processes
(KWOK runs no containers, so there are no images to run):

- the injector webhook on 127.0.0.1 with a certificate from the cluster CA, registered by URL for
  as long as it runs;
- the controller, probing watchdogs and evicting within PodDisruptionBudgets in the demo namespace;
- a stand-in for the kubelet's one job that matters here: KWOK marks pods Running but runs
  nothing, so for every Running sample pod the sample app (``autocrane testworkload``) is started
  on the pod's own IP. ``curl -X POST http://POD_IP:8080/fail`` makes its watchdog fail; the
  controller records it and, after a while, evicts and replaces the pod. A replacement pod may get
  the IP of the pod it replaces: the old app is stopped (and waited for) before the new one binds,
  and an app that exited is started again.

A demo namespace opted in to injection gets the sample Deployment and a PodDisruptionBudget.
Programs are started as ``python -m autocrane ...``: the core never imports an area, it only runs
its commands.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from devcluster import certs, controlplane

DEMO_NAMESPACE = "demo"
WEBHOOK_CONFIGURATION = "autocrane-injector"
APP_PORT = 8080


def _sample_deployment(image: str = "autocrane/sidecar:0.1.0", placement: dict[str, object] | None = None,
                       pull_policy: str = "IfNotPresent") -> dict[str, object]:
    labels = {"app": "sample"}
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532}
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
                "spec": {**(placement or {}), "terminationGracePeriodSeconds": 5,
                         "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{
                             "name": "app", "image": image, "imagePullPolicy": pull_policy,
                             "args": ["testworkload", "--data-path", "/autocrane/data/model"],
                             "ports": [{"name": "http", "containerPort": APP_PORT}], "securityContext": security,
                             "readinessProbe": {"httpGet": {"path": "/ping", "port": APP_PORT}, "periodSeconds": 2}}]},
            },
        },
    }


def deploy_sample(plane: controlplane.ControlPlane, *, image: str | None = None,
                  placement: dict[str, object] | None = None) -> None:
    """Namespace ``demo`` opted in to injection, the sample Deployment (3 pods) and its PDB (minAvailable 2)."""
    plane.create("/api/v1/namespaces", {"metadata": {"name": DEMO_NAMESPACE,
                                                     "labels": {"autocrane-inject": "enabled"}}})
    sa = f"/api/v1/namespaces/{DEMO_NAMESPACE}/serviceaccounts/default"
    plane.wait("ServiceAccount demo/default", lambda: plane.get(sa) is not None)
    sample = _sample_deployment(image, placement, "Never") if image else _sample_deployment()
    plane.create(f"/apis/apps/v1/namespaces/{DEMO_NAMESPACE}/deployments", sample)
    budget = {"minAvailable": 2, "selector": {"matchLabels": {"app": "sample"}}}
    plane.create(f"/apis/policy/v1/namespaces/{DEMO_NAMESPACE}/poddisruptionbudgets",
                 {"metadata": {"name": "sample"}, "spec": budget})


def autocrane_command() -> str:
    """How to call ``autocrane`` from another shell: the script beside this interpreter, if any."""
    script = Path(sys.executable).parent / "autocrane"
    return str(script) if script.exists() else "autocrane"


App = subprocess.Popen[bytes]


def reconcile(apps: dict[str, tuple[str, App]], running: dict[str, str], start: Callable[[str], App],
              grace: float = 5.0) -> None:
    """One app per running pod (uid -> IP): stop those of pods gone, then start the missing ones.

    The old app of an IP is waited for before a new pod's app binds it (a replacement pod may get
    the IP of the pod it replaces), and an app that exited (it lost that race, or crashed) is
    started again.
    """
    for uid in [uid for uid, (ip, app) in apps.items() if running.get(uid) != ip or app.poll() is not None]:
        _stop(apps.pop(uid)[1], grace)
    for uid, ip in running.items():
        if uid not in apps:
            apps[uid] = (ip, start(ip))


def _stop(app: App, grace: float) -> None:
    if app.poll() is None:
        app.terminate()
    try:
        app.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        app.kill()
        app.wait()


class Stack:
    """The AutoCrane processes beside a running :class:`controlplane.ControlPlane`."""

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        self.plane = plane
        self.directory = plane.directory / "autocrane"
        self.directory.mkdir(exist_ok=True)
        self.webhook_port = controlplane.free_port()
        self.webhook_health_port = controlplane.free_port()
        self.controller_health_port = controlplane.free_port()
        self.apps: dict[str, tuple[str, App]] = {}
        """Sample-app processes (with their IP) by pod UID."""
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
        deploy_sample(self.plane)
        self._runner = threading.Thread(target=self._run_apps, name="pod-apps", daemon=True)
        self._runner.start()

    def stop(self) -> None:
        """Stop the sample apps (the processes of the control plane are stopped by it)."""
        self._stop.set()
        if self._runner is not None:
            self._runner.join(timeout=10)
        while self.apps:
            _stop(self.apps.popitem()[1][1], grace=10)

    def _run_apps(self) -> None:
        """Keep one sample app per Running sample pod, on the pod's IP; stop those of pods gone."""
        log = (self.plane.logs / "sample-apps.log").open("ab")
        try:
            while not self._stop.wait(1.0):
                listing = self.plane.get(f"/api/v1/namespaces/{DEMO_NAMESPACE}/pods?labelSelector=app%3Dsample")
                running = {p["metadata"]["uid"]: p["status"]["podIP"] for p in (listing or {}).get("items", [])
                           if p["status"].get("phase") == "Running" and p["status"].get("podIP")
                           and not p["metadata"].get("deletionTimestamp")}
                reconcile(self.apps, running, lambda ip: subprocess.Popen(
                    [sys.executable, "-m", "autocrane", "testworkload", "--host", ip, "--port", str(APP_PORT),
                     "--log-format", "text"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        except controlplane.ControlPlaneError:
            pass  # the cluster is going away
        finally:
            log.close()

    def summary(self) -> str:
        return (f"injector webhook: https://127.0.0.1:{self.webhook_port}/mutate "
                f"(metrics http://127.0.0.1:{self.webhook_health_port}/metrics)\n"
                f"controller: metrics http://127.0.0.1:{self.controller_health_port}/metrics\n"
                f"sample: namespace '{DEMO_NAMESPACE}' (label autocrane-inject=enabled), Deployment 'sample' "
                "with injected containers, a PodDisruptionBudget, and the sample app on each pod's IP.\n"
                f"  make a watchdog fail:  curl -X POST http://POD_IP:{APP_PORT}/fail\n"
                f"  watch what happens:    {autocrane_command()} status -n {DEMO_NAMESPACE}")

