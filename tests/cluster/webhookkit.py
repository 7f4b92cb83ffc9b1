"""The injector webhook as the cluster tests run it: a real ``autocrane webhook`` process, registered.

The webhook runs on 127.0.0.1 with TLS, registered with ``clientConfig.url`` (a loopback address
cannot be a Service endpoint), exactly as the chart's MutatingWebhookConfiguration would register
it, apart from the client config. ``settings`` become ``--set KEY=VALUE`` flags (the images, the
pull policy, the data repository's URL for pods on the real node).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autocrane import keys
from devcluster import controlplane
from tests.cluster import harness
from tests.cluster.harness import wait_until
from tests.webhook import tlstools
from webhook import registration

OPT_IN = {"autocrane-inject": "enabled"}
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
DATA = {"data.autocrane.io/model": "models"}


class Injector:
    """A running ``autocrane webhook`` process, its certificate mount and its registration."""

    def __init__(self, directory: Path, settings: Mapping[str, str] | None = None,
                 kubeconfig: Path | None = None) -> None:
        self.ca = tlstools.new_ca("autocrane-test-webhook-ca")
        self.mount = tlstools.SecretMount(directory / "tls")
        self.mount.publish(tlstools.new_leaf(self.ca))
        self.port, self.health_port = controlplane.free_port(), controlplane.free_port()
        self.log = directory / "webhook.log"
        overrides = [f"--set={key}={value}" for key, value in (settings or {}).items()]
        if kubeconfig is not None:  # /hold reads AppRollouts through it
            overrides += ["--kubeconfig", str(kubeconfig)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from autocrane import cli; cli.main()", "webhook",
                 "--host", "127.0.0.1", "--port", str(self.port), "--health-port", str(self.health_port),
                 "--tls-cert-file", str(self.mount.cert_file), "--tls-key-file", str(self.mount.key_file),
                 "--cert-reload-interval", "0.2", "--drain-delay", "0", "--log-format", "text", *overrides],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until("the webhook's /readyz", self._ready, timeout=30)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"webhook exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def admissions(self) -> float:
        """``autocrane_webhook_admissions_total`` summed over results, from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines
                   if line.startswith("autocrane_webhook_admissions_total{"))

    def configuration(self) -> dict[str, object]:
        return registration.mutating_webhook_configuration(
            namespace="autocrane-system", ca_bundle=self.ca.cert_pem,
            url=f"https://127.0.0.1:{self.port}{registration.PATH}", failure_policy="Fail",
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def bare_pod(name: str, pod_annotations: dict[str, str], *, restricted: bool = False) -> dict[str, object]:
    """A bare pod of one container (``registry.invalid``: for KWOK nodes and dry runs)."""
    container: dict[str, object] = {"name": "app", "image": "registry.invalid/app:1"}
    spec: dict[str, object] = {"containers": [container]}
    if restricted:
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000,
                                   "seccompProfile": {"type": "RuntimeDefault"}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": pod_annotations}, "spec": spec}


def is_injected(found: object) -> bool:
    meta_annotations = found.metadata.annotations or {}  # type: ignore[attr-defined]
    return keys.INJECTOR_STATUS in meta_annotations


@contextlib.contextmanager
def registered(cluster: harness.Cluster, directory: Path,
               settings: Mapping[str, str] | None = None) -> Iterator[Injector]:
    """A running injector, registered until the end of the block; the process stops with it."""
    running = Injector(directory, settings, cluster.kubeconfig)
    admission = client.AdmissionregistrationV1Api(cluster.api)
    config = running.configuration()
    try:
        admission.create_mutating_webhook_configuration(config)
        # The API server picks up a new configuration asynchronously: wait until a dry-run pod in
        # an opted-in namespace comes back injected.
        probe_ns = f"webhook-registration-probe-{running.port}"
        cluster.create_namespace(probe_ns, labels=OPT_IN)
        wait_until("the API server to call the webhook", lambda: is_injected(cluster.core.create_namespaced_pod(
            probe_ns, bare_pod("probe", DATA), dry_run="All")), timeout=30)
        cluster.delete_namespace(probe_ns)
        yield running
    finally:
        with contextlib.suppress(ApiException):
            admission.delete_mutating_webhook_configuration(config["metadata"]["name"])
        running.stop()
