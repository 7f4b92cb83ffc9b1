"""AutoCrane itself on the local control plane: what `make dev` runs beside the cluster.

The programs run as local processes (there are no images to pull here): the injector webhook on
127.0.0.1 with a certificate from the cluster CA, registered by URL for as long as it runs. A
demo namespace opted in to injection gets a sample Deployment, so `kubectl get pods -n demo`
shows injected pods right away. Programs are started as ``python -m autocrane ...``: the core
never imports an area, it only runs its commands.
"""

from __future__ import annotations

import sys
import urllib.request

from autocrane.devcluster import certs, controlplane

DEMO_NAMESPACE = "demo"
WEBHOOK_CONFIGURATION = "autocrane-injector"


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
                }},
                "spec": {"containers": [{"name": "app", "image": "autocrane/sidecar:0.1.0",
                                         "args": ["testworkload", "--data-path", "/autocrane/data/model"]}]},
            },
        },
    }


class Stack:
    """The AutoCrane processes beside a running :class:`controlplane.ControlPlane`."""

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        self.plane = plane
        self.directory = plane.directory / "autocrane"
        self.directory.mkdir(exist_ok=True)
        self.webhook_port = controlplane.free_port()
        self.webhook_health_port = controlplane.free_port()

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
        timeout = self.plane.options.start_timeout
        controlplane.wait_for("the webhook's /readyz", self._webhook_ready, timeout, check=self.plane.check_alive)
        controlplane.wait_for("the webhook's registration", lambda: self.plane.get(
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}")
            is not None, timeout, check=self.plane.check_alive)
        self._deploy_sample()

    def _webhook_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.webhook_health_port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _deploy_sample(self) -> None:
        self.plane.create("/api/v1/namespaces", {"metadata": {"name": DEMO_NAMESPACE,
                                                              "labels": {"autocrane-inject": "enabled"}}})
        sa = f"/api/v1/namespaces/{DEMO_NAMESPACE}/serviceaccounts/default"
        controlplane.wait_for("ServiceAccount demo/default", lambda: self.plane.get(sa) is not None,
                              self.plane.options.start_timeout, check=self.plane.check_alive)
        self.plane.create(f"/apis/apps/v1/namespaces/{DEMO_NAMESPACE}/deployments", _sample_deployment())

    def summary(self) -> str:
        return (f"injector webhook: https://127.0.0.1:{self.webhook_port}/mutate "
                f"(metrics http://127.0.0.1:{self.webhook_health_port}/metrics)\n"
                f"sample: namespace '{DEMO_NAMESPACE}' (label autocrane-inject=enabled), Deployment 'sample' "
                "with injected containers")

