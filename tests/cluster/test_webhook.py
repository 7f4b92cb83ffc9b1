"""The injector webhook against a real API server: registration, injection, denial, PSA, dry-run, rotation.

The webhook runs as a real ``autocrane webhook`` process on 127.0.0.1, registered by URL
(:mod:`tests.cluster.webhookkit`).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autocrane import keys
from devcluster import build
from tests.cluster import harness, webhookkit
from tests.cluster.harness import wait_until
from tests.cluster.webhookkit import DATA, OPT_IN, RESTRICTED, Injector, bare_pod, is_injected
from tests.webhook import tlstools
from webhook import options

pytestmark = pytest.mark.cluster

@pytest.fixture(scope="module")
def injector(cluster: harness.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    with webhookkit.registered(cluster, tmp_path_factory.mktemp("webhook")) as running:
        yield running


def _label(cluster: harness.Cluster, namespace: str, labels: dict[str, str]) -> None:
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def test_deployment_pods_in_an_opted_in_namespace_come_out_injected_and_run(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    _label(cluster, namespace, OPT_IN)
    labels = {"app": "injected"}
    cluster.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "injected"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels, "annotations": {**DATA,
                         keys.MIN_READY_SECONDS: "0"}},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}},
    })

    def running_pods() -> list[object]:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=injected").items
        return pods if len(pods) == 2 and all(p.status.phase == "Running" for p in pods) else []

    for pod in wait_until("2 injected pods Running", running_pods):
        assert is_injected(pod)
        init_names = [c.name for c in pod.spec.init_containers or []]
        assert any("datadeployer" in n for n in init_names), init_names
        app = next(c for c in pod.spec.containers if c.name == "app")
        store = options.DEFAULT_STORE_LOCATION
        data_mounts = [m for m in app.volume_mounts or [] if m.mount_path.startswith(store)]
        assert data_mounts and all(m.read_only for m in data_mounts)


def test_pods_in_an_unlabelled_namespace_are_untouched(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    pod = cluster.core.create_namespaced_pod(namespace, bare_pod("plain", DATA))
    assert not is_injected(pod)
    assert [c.name for c in pod.spec.containers] == ["app"]
    assert not pod.spec.init_containers


def test_pods_without_autocrane_annotations_are_never_sent(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    _label(cluster, namespace, OPT_IN)
    pod = cluster.core.create_namespaced_pod(namespace, bare_pod("plain", {"unrelated": "x"}))
    assert not is_injected(pod)
    assert [c.name for c in pod.spec.containers] == ["app"]


def test_a_malformed_annotation_is_refused_with_a_message_naming_it(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    _label(cluster, namespace, OPT_IN)
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(namespace, bare_pod("bad", {**DATA, keys.STORE_LOCATION: "relative"}))
    assert refused.value.status == 400
    assert keys.STORE_LOCATION in refused.value.body
    assert "absolute path" in refused.value.body


def test_a_restricted_namespace_accepts_injected_pods(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    _label(cluster, namespace, {**OPT_IN, **RESTRICTED})
    pod = cluster.core.create_namespaced_pod(
        namespace, bare_pod("restricted", {**DATA, keys.MIN_READY_SECONDS: "5"}, restricted=True))
    assert is_injected(pod)
    assert len(pod.spec.init_containers or []) + len(pod.spec.containers) >= 3


def test_kubectl_server_side_dry_run_shows_the_injection(
    cluster: harness.Cluster, injector: Injector, namespace: str, tmp_path: Path
) -> None:
    _label(cluster, namespace, OPT_IN)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(bare_pod("preview", DATA)))
    kubectl = build.bin_dir() / "kubectl"
    if not kubectl.exists():
        pytest.skip(f"kubectl is not built ({kubectl}); run 'python -m devcluster build'")
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "apply", "--dry-run=server",
         "-o", "yaml", "-f", str(manifest)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    preview = yaml.safe_load(result.stdout)
    assert keys.INJECTOR_STATUS in preview["metadata"]["annotations"]
    with pytest.raises(ApiException) as missing:
        cluster.core.read_namespaced_pod("preview", namespace)
    assert missing.value.status == 404


def test_certificate_rotation_while_requests_flow_fails_none(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    _label(cluster, namespace, OPT_IN)
    results: list[bool | str] = []
    stop = threading.Event()

    def admit_in_a_loop() -> None:
        core = client.CoreV1Api(cluster.api)
        while not stop.is_set():
            try:
                results.append(is_injected(core.create_namespaced_pod(namespace, bare_pod("rot", DATA), dry_run="All")))
            except ApiException as exc:
                results.append(f"{exc.status}: {exc.body[:300]}")

    worker = threading.Thread(target=admit_in_a_loop)
    worker.start()
    try:
        wait_until("admissions before the rotation", lambda: len(results) >= 20)
        new_leaf = tlstools.new_leaf(injector.ca)
        injector.mount.publish(new_leaf)
        context = tlstools.client_context(injector.ca)
        wait_until("the webhook to present the new certificate", lambda: asyncio.run(
            tlstools.served_serial(injector.port, context)) == tlstools.serial_of(new_leaf))
        after = len(results)
        wait_until("admissions after the rotation", lambda: len(results) >= after + 20)
    finally:
        stop.set()
        worker.join(timeout=30)
    failures = [r for r in results if r is not True]
    assert not failures, failures[:5]


def test_a_second_invocation_on_the_real_api_server_changes_nothing(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    """Two registrations of the injector: the second sees an injected pod (with whatever the
    API server's own plugins added meanwhile) and must leave it as it is, with no duplicates."""
    _label(cluster, namespace, OPT_IN)
    admission = client.AdmissionregistrationV1Api(cluster.api)
    twice = injector.configuration()
    twice["metadata"]["name"] = "autocrane-injector-again"
    twice["webhooks"][0]["name"] = "again.autocrane.io"
    admission.create_mutating_webhook_configuration(twice)
    try:
        probe = {**DATA, keys.MIN_READY_SECONDS: "1"}
        once = cluster.core.create_namespaced_pod(namespace, bare_pod("once", probe), dry_run="All")

        def called_twice() -> bool:
            before = injector.admissions()
            cluster.core.create_namespaced_pod(namespace, bare_pod("probe", probe), dry_run="All")
            return injector.admissions() - before >= 2

        wait_until("one pod creation to reach the webhook through both registrations", called_twice)
        pod = cluster.core.create_namespaced_pod(namespace, bare_pod("twice", probe))
    finally:
        admission.delete_mutating_webhook_configuration("autocrane-injector-again")
    names = [c.name for c in (pod.spec.init_containers or []) + pod.spec.containers]
    assert len(names) == len(set(names)), names
    assert names == [c.name for c in (once.spec.init_containers or []) + once.spec.containers]
    volumes = [v.name for v in pod.spec.volumes]
    assert len(volumes) == len(set(volumes)), volumes


@pytest.mark.parametrize(("key", "value"), [
    (keys.MIN_READY_SECONDS, "9" * 5000),
    ("injector.autocrane.io/datadeployer-cpu", "1e999999999"),
    ("injector.autocrane.io/datadeployer-memory-limit", "1e-999999999"),
    (keys.INJECTOR_STATUS, "[" * 10_000 + "]" * 10_000),
    (keys.STORE_LOCATION, "/data\n"),
])
def test_hostile_annotations_are_refused_naming_them_not_as_internal_errors(
    cluster: harness.Cluster, injector: Injector, namespace: str, key: str, value: str
) -> None:
    """Issue 8 (defects 5, 7, 11) through the real API server: 400 naming the annotation, a short message."""
    _label(cluster, namespace, OPT_IN)
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(namespace, bare_pod("hostile", {**DATA, key: value}), dry_run="All")
    assert refused.value.status == 400, refused.value.body[:500]
    assert f'annotation \\"{key}\\"' in refused.value.body and "internal error" not in refused.value.body
    assert len(refused.value.body) < 1000


def test_a_hand_written_status_naming_the_app_leaves_the_app_on_a_real_api_server(
    cluster: harness.Cluster, injector: Injector, namespace: str
) -> None:
    """Issue 8 (defect 8): the status annotation strips only AutoCrane's own names."""
    _label(cluster, namespace, OPT_IN)
    status = '{"config":"x","containers":["app"],"initContainers":[],"version":"0.1.0","volumes":[]}'
    for extra in ({}, {keys.INJECT: "false"}):
        pod = cluster.core.create_namespaced_pod(
            namespace, bare_pod("status", {**DATA, keys.INJECTOR_STATUS: status, **extra}), dry_run="All")
        assert "app" in [c.name for c in pod.spec.containers]
