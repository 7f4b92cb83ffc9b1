"""The chart's ``tls.mode=cert-manager`` against a real cert-manager, with the injector on the real node.

cert-manager's controller and cainjector (built from its Go module, ``devcluster.certmanager``) run
beside the control plane for this module only. The chart is installed with helm from the images the
node imported; the API server calls the injector through its Service, as in any cluster. Renewals
are forced the way ``cmctl renew`` does it: the Certificate's ``Issuing`` condition set to True.
While one is picked up, pods are admitted in a bounded loop and every failure is counted.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import socket
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autocrane import keys
from devcluster import certmanager, images, node
from tests.cluster import harness, helmkit
from tests.cluster.harness import wait_until
from webhook import tls

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

RELEASE = "ac-cm"
WEBHOOK = f"{RELEASE}-injector"
GROUP, VERSION = "cert-manager.io", "v1"
PORT = 8443
"""The injector container's TLS port (webhook.port); /metrics is on webhook.healthPort, 8080."""
HEALTH_PORT = 8080
RENEWAL_TIMEOUT = 240.0
"""The kubelet refreshes a mounted Secret at the pod's next sync (about a minute apart), the
webhook polls its files every 5 s: a renewal reaches every replica well within this."""
MAX_ADMISSIONS = 5000
"""Bound of an admission loop, besides its time."""


@dataclasses.dataclass
class Installed:
    """The release: its namespace, an opted-in namespace for pods, and cert-manager."""

    cluster: harness.Cluster
    namespace: str
    apps: str
    cert_manager: certmanager.CertManager

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.cluster.api)

    def certificate(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "certificates", name)

    def secret(self, name: str) -> dict[str, bytes]:
        found = self.cluster.core.read_namespaced_secret(name, self.namespace)
        return {key: base64.b64decode(value) for key, value in (found.data or {}).items()}

    def ca_bundle(self) -> bytes | None:
        config = client.AdmissionregistrationV1Api(self.cluster.api).read_mutating_webhook_configuration(WEBHOOK)
        bundle = config.webhooks[0].client_config.ca_bundle
        return base64.b64decode(bundle) if bundle else None

    def webhook_pods(self) -> list[Any]:
        return self.cluster.core.list_namespaced_pod(self.namespace, label_selector=(
            f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=injector")).items

    def renew(self, name: str) -> None:
        """What ``cmctl renew`` does: the Certificate's Issuing condition set to True (ManuallyTriggered)."""
        cert = self.certificate(name)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        issuing = {"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                   "message": "Certificate re-issuance manually triggered", "lastTransitionTime": now,
                   "observedGeneration": cert["metadata"]["generation"]}
        conditions = [c for c in cert.get("status", {}).get("conditions", []) if c["type"] != "Issuing"]
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, "certificates", name, {
            "metadata": {"resourceVersion": cert["metadata"]["resourceVersion"]},
            "status": {"conditions": [*conditions, issuing]}})


def _image_values() -> dict[str, Any]:
    """image/sidecarImage values naming the images the real node imported (``Never`` pulled)."""
    plane = harness.current_control_plane()
    assert plane is not None and plane.node is not None
    built = {i.name: i.ref for i in plane.node.images if isinstance(i, images.Image)}
    values: dict[str, Any] = {}
    for key, name in (("image", "autocrane"), ("sidecarImage", "sidecar")):
        repository, _, tag = built[name].rpartition(":")
        values[key] = {"repository": repository, "tag": tag, "pullPolicy": "Never"}
    return values


def _values() -> dict[str, Any]:
    placement = node.placement()
    return {
        **_image_values(),
        "tls": {"mode": "cert-manager"},
        "controller": {"enabled": False},  # only the injector is under test
        "dataRepository": {"enabled": False},
        "crds": {"install": False},  # cluster-wide and kept: owned by whichever release made it first
        "webhook": {"nodeSelector": placement["nodeSelector"], "tolerations": placement["tolerations"]},
    }


@pytest.fixture(scope="module")
def cert_manager(cluster: harness.Cluster) -> Iterator[certmanager.CertManager]:
    harness.require_real_node(cluster)
    plane = harness.current_control_plane()
    if plane is None:
        pytest.skip("cert-manager is run against the local control plane; AUTOCRANE_TEST_KUBECONFIG names another")
    with certmanager.CertManager.start(plane) as running:
        yield running


@pytest.fixture(scope="module")
def installed(cluster: harness.Cluster, cert_manager: certmanager.CertManager,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    suffix = uuid.uuid4().hex[:6]
    release_ns, apps_ns = f"acm-system-{suffix}", f"acm-apps-{suffix}"
    cluster.create_namespace(release_ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    cluster.create_namespace(apps_ns, labels={"autocrane-inject": "enabled"})
    values = tmp_path_factory.mktemp("chart") / "values.yaml"
    values.write_text(yaml.safe_dump(_values()))
    try:
        done = helmkit.helm("upgrade", "--install", RELEASE, str(helmkit.CHART), "-n", release_ns,
                            "-f", str(values), "--wait=false", kubeconfig=cluster.kubeconfig)
        assert done.returncode == 0, done.stderr
        yield Installed(cluster, release_ns, apps_ns, cert_manager)
    finally:
        removed = helmkit.helm("uninstall", RELEASE, "-n", release_ns, "--wait", kubeconfig=cluster.kubeconfig)
        cluster.delete_namespace(apps_ns)
        cluster.delete_namespace(release_ns)
    assert removed.returncode == 0, removed.stderr


def _is_ready(obj: dict[str, Any]) -> bool:
    """A cert-manager object's Ready condition is True."""
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _serving(installed: Installed) -> list[Any]:
    """Both injector pods Ready (waited for: the first wait includes cert-manager's issuance)."""
    def ready() -> list[Any]:
        installed.cert_manager.check_alive()
        pods = [p for p in installed.webhook_pods() if p.metadata.deletion_timestamp is None]
        return pods if len(pods) == 2 and all(map(_ready, pods)) else []

    return wait_until("the injector's 2 pods Ready on the real node", ready, timeout=180)


def _served(pod_ip: str, *, ca_pem: bytes | None = None, hostname: str | None = None) -> bytes:
    """The DER certificate the pod serves; with ``ca_pem``, the handshake verifies it for ``hostname``."""
    context = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else ssl._create_unverified_context()
    with socket.create_connection((pod_ip, PORT), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=hostname) as conn:
        served = conn.getpeercert(binary_form=True)
    assert served is not None
    return served


def _der(pem: bytes) -> bytes:
    """The first certificate of a PEM text, DER-encoded."""
    text = pem.decode()
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(text[text.index(begin):text.index(end)] + end + "\n")


def _cert_reloads(pod_ip: str) -> dict[str, float]:
    """``autocrane_webhook_cert_reloads_total`` by result, from the pod's /metrics."""
    with urllib.request.urlopen(f"http://{pod_ip}:{HEALTH_PORT}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    found = {}
    for line in lines:
        if line.startswith("autocrane_webhook_cert_reloads_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('result="', 1)[1].split('"', 1)[0]] = float(value)
    return found


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"data.autocrane.io/model": "models"}},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}


def _admitted_and_injected(installed: Installed) -> bool:
    """One pod through the API server (dry run): True when the injector changed it."""
    pod = installed.cluster.core.create_namespaced_pod(installed.apps, _pod("probe"), dry_run="All")
    return keys.INJECTOR_STATUS in (pod.metadata.annotations or {})


class AdmissionLoop:
    """Admits dry-run pods back to back on a thread until stopped (or its bounds), recording each result."""

    def __init__(self, installed: Installed) -> None:
        self.installed = installed
        self.results: list[bool | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AdmissionLoop:
        self._thread.start()
        wait_until("admissions before the renewal", lambda: len(self.results) >= 20)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + RENEWAL_TIMEOUT * 2
        while not self._stop.is_set() and len(self.results) < MAX_ADMISSIONS and time.monotonic() < deadline:
            try:
                self.results.append(_admitted_and_injected(self.installed) or "admitted but not injected")
            except ApiException as exc:
                self.results.append(f"{exc.status}: {str(exc.body)[:300]}")
            self._stop.wait(0.1)

    def more(self, count: int) -> None:
        """Wait for ``count`` more admissions (after a change, to see it admit too)."""
        target = len(self.results) + count
        wait_until(f"{count} more admissions", lambda: len(self.results) >= target or not self._thread.is_alive())

    def failures(self) -> list[str]:
        return [r for r in self.results if r is not True]


def _wait_served_everywhere(installed: Installed, pods: list[Any], leaf_pem: bytes) -> float:
    """Seconds until every pod serves ``leaf_pem`` (a TLS handshake to each pod's IP)."""
    started = time.monotonic()

    def everywhere() -> bool:
        installed.cert_manager.check_alive()
        return all(_served(p.status.pod_ip) == _der(leaf_pem) for p in pods)

    wait_until("every injector pod to serve the renewed certificate", everywhere, timeout=RENEWAL_TIMEOUT, interval=0.5)
    return time.monotonic() - started


def _wait_secret_changed(installed: Installed, name: str, old_cert: bytes) -> dict[str, bytes]:
    def changed() -> dict[str, bytes] | None:
        installed.cert_manager.check_alive()
        secret = installed.secret(name)
        return secret if secret.get("tls.crt", old_cert) != old_cert else None

    return wait_until(f"cert-manager to write a new certificate into {name}", changed, timeout=60)


def _restarts(pods: list[Any]) -> dict[str, int]:
    return {p.metadata.uid: sum(s.restart_count for s in p.status.container_statuses or []) for p in pods}


def test_cert_manager_starts_from_its_module_and_stopping_removes_its_crds_and_processes(
        cluster: harness.Cluster) -> None:
    # Before the module's own cert-manager starts (it would share the CRDs).
    harness.require_real_node(cluster)
    plane = harness.current_control_plane()
    if plane is None:
        pytest.skip("cert-manager is run against the local control plane; AUTOCRANE_TEST_KUBECONFIG names another")
    extensions = client.ApiextensionsV1Api(cluster.api)
    assert not [c for c in extensions.list_custom_resource_definition().items if "cert-manager.io" in c.spec.group]
    with certmanager.CertManager.start(plane) as running:
        assert sorted(running.crds) == [
            "certificaterequests.cert-manager.io", "certificates.cert-manager.io", "challenges.acme.cert-manager.io",
            "clusterissuers.cert-manager.io", "issuers.cert-manager.io", "orders.acme.cert-manager.io"]
        processes = list(running.processes)
        assert [p.name for p in processes] == ["cert-manager-controller", "cert-manager-cainjector"]
        issuer = {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "probe"},
                  "spec": {"selfSigned": {}}}
        custom = client.CustomObjectsApi(cluster.api)
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", "issuers", issuer)

        def issuer_ready() -> bool:
            running.check_alive()
            return _is_ready(custom.get_namespaced_custom_object(GROUP, VERSION, "default", "issuers", "probe"))

        wait_until("the controller to mark a SelfSigned Issuer Ready", issuer_ready, timeout=60)
    assert all(p.popen.poll() is not None for p in processes)
    assert not [p for p in processes if p in plane.processes]
    assert not [c for c in extensions.list_custom_resource_definition().items if "cert-manager.io" in c.spec.group]
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", "issuers", "probe")
    assert gone.value.status == 404


def test_cert_manager_issues_the_serving_certificate_and_cainjector_fills_the_ca_bundle(
        installed: Installed) -> None:
    def issued() -> dict[str, Any] | None:
        installed.cert_manager.check_alive()
        cert = installed.certificate(f"{WEBHOOK}-serving")
        return cert if _is_ready(cert) else None

    wait_until("the serving Certificate Ready", issued, timeout=120)
    secret = installed.secret(f"{WEBHOOK}-tls")
    ca = installed.secret(f"{WEBHOOK}-ca")
    info = tls.describe(secret["tls.crt"])
    assert set(info.dns_names) == {f"{WEBHOOK}.{installed.namespace}.svc",
                                   f"{WEBHOOK}.{installed.namespace}.svc.cluster.local"}
    assert secret["ca.crt"] == ca["tls.crt"], "the serving Secret's ca.crt is the chart's own CA"
    assert tls.signed_by(secret["tls.crt"], ca["tls.crt"])
    bundle = wait_until("cainjector to fill the caBundle", installed.ca_bundle, timeout=60)
    assert bundle == secret["ca.crt"]


def test_the_injector_serves_cert_managers_certificate_and_injects_through_the_api_server(
        installed: Installed) -> None:
    pods = _serving(installed)
    secret = installed.secret(f"{WEBHOOK}-tls")
    hostname = f"{WEBHOOK}.{installed.namespace}.svc"
    for pod in pods:
        assert pod.spec.node_name == installed.cluster.real_node
        served = _served(pod.status.pod_ip, ca_pem=secret["ca.crt"], hostname=hostname)
        assert served == _der(secret["tls.crt"])
    wait_until("the caBundle filled", installed.ca_bundle, timeout=60)
    # The API server picks up the configuration's caBundle asynchronously.
    wait_until("a pod admitted through the API server and injected", lambda: _suppress(
        lambda: _admitted_and_injected(installed)), timeout=60)


def _suppress(attempt: Any) -> bool:
    try:
        return bool(attempt())
    except ApiException:
        return False


def test_a_renewal_is_served_without_a_restart_and_without_a_failed_admission(installed: Installed) -> None:
    pods = _serving(installed)
    wait_until("pods admitted", lambda: _suppress(lambda: _admitted_and_injected(installed)), timeout=60)
    before = installed.secret(f"{WEBHOOK}-tls")
    reloads_before = {p.metadata.uid: _cert_reloads(p.status.pod_ip) for p in pods}
    with AdmissionLoop(installed) as loop:
        renewed_at = time.monotonic()
        installed.renew(f"{WEBHOOK}-serving")
        after = _wait_secret_changed(installed, f"{WEBHOOK}-tls", before["tls.crt"])
        issued = time.monotonic() - renewed_at
        served = _wait_served_everywhere(installed, pods, after["tls.crt"])
        loop.more(20)
    print(f"renewal: issued {issued:.1f}s after the trigger, served by both pods {served:.1f}s later; "
          f"{len(loop.results)} admissions meanwhile")
    assert tls.describe(after["tls.crt"]).serial != tls.describe(before["tls.crt"]).serial
    assert after["tls.key"] != before["tls.key"], "rotationPolicy: Always makes a new key"
    assert not loop.failures(), loop.failures()[:5]
    now = {p.metadata.uid: p for p in _serving(installed)}
    assert set(now) == {p.metadata.uid for p in pods}, "the same pods serve the new certificate"
    assert set(_restarts(list(now.values())).values()) == {0}
    for uid, pod in now.items():
        reloads = _cert_reloads(pod.status.pod_ip)
        assert reloads.get("ok", 0) == reloads_before[uid].get("ok", 0) + 1, reloads
        assert reloads.get("error", 0) == 0, reloads


@pytest.fixture
def replacing_cainjector(installed: Installed) -> Iterator[None]:
    """cainjector as before cert-manager 1.19: a new CA replaces the caBundle instead of joining it."""
    installed.cert_manager.restart("cainjector", "--feature-gates=CAInjectorMerging=false")
    try:
        yield
    finally:
        installed.cert_manager.restart("cainjector")


def test_a_ca_renewal_fails_no_admission_even_where_cainjector_replaces_the_bundle(
        installed: Installed, replacing_cainjector: None) -> None:
    """The CA Certificate renews too (at 2/3 of its ten years). The next serving certificate is
    signed by the renewed CA and reaches the pods only at the kubelet's next refresh; until then
    they serve the previous leaf. cert-manager 1.19's cainjector keeps the old CA in the caBundle
    beside the new one (CAInjectorMerging); earlier ones replace it at once, so the old leaf must
    verify against the renewed CA: the chart keeps the CA's key across renewals (rotationPolicy
    Never; docs/injector.md has what failed without it)."""
    pods = _serving(installed)
    wait_until("pods admitted", lambda: _suppress(lambda: _admitted_and_injected(installed)), timeout=60)
    ca_before, leaf_before = installed.secret(f"{WEBHOOK}-ca"), installed.secret(f"{WEBHOOK}-tls")
    with AdmissionLoop(installed) as loop:
        installed.renew(f"{WEBHOOK}-ca")
        ca_after = _wait_secret_changed(installed, f"{WEBHOOK}-ca", ca_before["tls.crt"])
        installed.renew(f"{WEBHOOK}-serving")
        leaf_after = _wait_secret_changed(installed, f"{WEBHOOK}-tls", leaf_before["tls.crt"])
        assert leaf_after["ca.crt"] == ca_after["tls.crt"]
        wait_until("cainjector to replace the caBundle with the renewed CA",
                   lambda: _bundle_certificates(installed) == {_der(ca_after["tls.crt"])}, timeout=60)
        served = _wait_served_everywhere(installed, pods, leaf_after["tls.crt"])
        loop.more(20)
    print(f"CA renewal: the renewed CA's leaf served by both pods {served:.1f}s after the caBundle changed; "
          f"{len(loop.results)} admissions meanwhile")
    assert not loop.failures(), f"{len(loop.failures())} of {len(loop.results)} failed: {loop.failures()[:3]}"
    assert tls.signed_by(leaf_before["tls.crt"], ca_after["tls.crt"]), "the renewed CA verifies the old leaf"
    assert set(_restarts(_serving(installed)).values()) == {0}


def _bundle_certificates(installed: Installed) -> set[bytes]:
    """The DER certificates of the caBundle."""
    end = b"-----END CERTIFICATE-----"
    return {_der(block + end) for block in (installed.ca_bundle() or b"").split(end)[:-1]}


