"""AutoCrane in real containers: injected pods on the real node, from the images built here.

The injector is a local ``autocrane webhook`` process registered by URL (``webhookkit``), set up to
inject the sidecar image with ``imagePullPolicy: Never`` and the data repository's Service URL. The
data repository runs on the real node from its image (``injectedkit.RepositoryPod``), polling a
tree the test serves from the host. Every pod runs in a namespace that enforces Pod Security
``restricted``; the app is ``autocrane testworkload``, from the sidecar image too.

Nothing here writes the pods' downward-API files: the kubelet does, when the pod changes.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autocrane import inpod, keys, watchdogs
from tests.cluster import harness, injectedkit, nodekit, webhookkit
from tests.cluster.controllerkit import controller, pod_events
from tests.cluster.harness import wait_until
from tests.cluster.injectedkit import DATA_SET, LIVE, RepositoryPod
from webhook import containers

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

DATADEPLOYER_PORT = 8098
WATCHDOGHEALTHZ_PORT = 8097
INJECTED = (containers.DATADEPLOYER_INIT, containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ)


# --- module fixtures: the data source, the repository pod, the injector, one data app ----------

@pytest.fixture(scope="module")
def repository(cluster: harness.Cluster, real_node: str) -> Iterator[RepositoryPod]:
    plane = harness.current_control_plane()
    assert plane is not None and plane.node is not None
    source = injectedkit.ArchiveServer(plane.node.claim.host_address)
    namespace = injectedkit.create_restricted_namespace(cluster, "datarepo", inject=False)
    try:
        first = source.publish("v1")
        repo = RepositoryPod(cluster, namespace, source).start()
        repo.packed(first, "v1")
        yield repo
    finally:
        cluster.delete_namespace(namespace)
        source.close()


@pytest.fixture(scope="module")
def injector(cluster: harness.Cluster, repository: RepositoryPod,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[webhookkit.Injector]:
    sidecar = injectedkit.autocrane_images()["sidecar"]
    settings = {"datadeployer_image": sidecar, "watchdoghealthz_image": sidecar, "image_pull_policy": "Never",
                "data_repository_url": repository.url, "datadeployer_status_port": str(DATADEPLOYER_PORT),
                "watchdoghealthz_port": str(WATCHDOGHEALTHZ_PORT)}
    with webhookkit.registered(cluster, tmp_path_factory.mktemp("injector"), settings) as running:
        yield running


def first_version(repository: RepositoryPod) -> dict[str, Any]:
    return dict(repository.manifest()["versions"][0])


@dataclasses.dataclass
class DataApp:
    namespace: str
    pod: Any
    apply_to_ready: float

    @property
    def name(self) -> str:
        return str(self.pod.metadata.name)

    @property
    def ip(self) -> str:
        return str(self.pod.status.pod_ip)

    def status(self) -> dict[str, Any]:
        """The datadeployer's ``/status`` entry of the data set, from the pod's IP."""
        body = injectedkit.http_get(f"http://{self.ip}:{DATADEPLOYER_PORT}/status")
        assert body is not None, "the datadeployer's /status does not answer"
        return dict(json.loads(body)["sets"][DATA_SET])


@pytest.fixture(scope="module")
def data_app(cluster: harness.Cluster, injector: webhookkit.Injector, repository: RepositoryPod) -> Iterator[DataApp]:
    """One injected pod of a Deployment with data (the repository's first version requested at admission)."""
    namespace = injectedkit.create_restricted_namespace(cluster, "data-app", inject=True)
    pod_annotations = {**injectedkit.data_annotations(first_version(repository)), keys.MIN_READY_SECONDS: "1"}
    try:
        started = time.monotonic()
        cluster.apps.create_namespaced_deployment(namespace, injectedkit.deployment("app", 1, pod_annotations))
        (pod,) = nodekit.ready_pods(cluster, namespace, "app", 1, timeout=120)
        app = DataApp(namespace, pod, time.monotonic() - started)
        print(f"injected pod with data: apply to Ready {app.apply_to_ready:.1f}s")
        yield app
    finally:
        cluster.delete_namespace(namespace)


# --- the injected pod runs, its data is live -----------------------------------------------------

def test_an_opted_in_deployments_pod_runs_the_injected_containers_from_the_images(
        cluster: harness.Cluster, real_node: str, repository: RepositoryPod, data_app: DataApp) -> None:
    pod, sidecar = data_app.pod, injectedkit.autocrane_images()["sidecar"]
    assert pod.spec.node_name == real_node
    assert webhookkit.is_injected(pod)
    assert [c.name for c in pod.spec.init_containers] == [containers.DATADEPLOYER_INIT]
    assert [c.name for c in pod.spec.containers] == ["app", containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ]
    for container in pod.spec.init_containers + pod.spec.containers:
        assert (container.image, container.image_pull_policy) == (sidecar, "Never"), container.name

    statuses = injectedkit.container_statuses(pod)
    first = statuses[containers.DATADEPLOYER_INIT].state.terminated
    assert first is not None and (first.exit_code, first.reason) == (0, "Completed")
    for name in ("app", containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ):
        assert statuses[name].ready and statuses[name].state.running is not None, name
        assert statuses[name].restart_count == 0, name

    # The first version is live where the app reads it, through its read-only mount of the volume.
    version = first_version(repository)
    part = injectedkit.exec_in(cluster, data_app.namespace, data_app.name, "app", "cat", f"{LIVE}/part-00")
    assert part.stdout == injectedkit.tree_text("v1")
    refused = injectedkit.exec_in(cluster, data_app.namespace, data_app.name, "app", "sh", "-c",
                                  f"echo x > {LIVE}/part-00", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    seen = json.loads(injectedkit.http_get(f"http://{data_app.ip}:{injectedkit.APP_PORT}/data") or b"{}")
    assert seen["versions"] == {LIVE: version["version"]}
    entry = data_app.status()
    assert (entry["version"], entry["sha256"], entry["error"]) == (version["version"], version["sha256"], None)


def test_a_new_version_is_swapped_in_while_the_app_keeps_running(
        cluster: harness.Cluster, repository: RepositoryPod, data_app: DataApp) -> None:
    namespace, name = data_app.namespace, data_app.name
    before = injectedkit.container_statuses(cluster.core.read_namespaced_pod(name, namespace))
    live = injectedkit.exec_in(cluster, namespace, name, "app", "head", "-n1", f"{LIVE}/part-00").stdout.strip()
    label = f"v-{uuid.uuid4().hex[:8]}"
    version = repository.publish(label)

    reader = injectedkit.Reader(cluster, namespace, name, until=label)
    requested = time.time()
    cluster.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {
        keys.REQUEST_DATA_PREFIX + DATA_SET: injectedkit.request_value(version)}}})
    entry = wait_until(f"{label} live and acknowledged", lambda: (e := data_app.status())["version"] == version[
        "version"] and e["error"] is None and e, timeout=60)
    acknowledged = time.time()
    written = injectedkit.downward_api_written_at(cluster, namespace, name, containers.DATADEPLOYER)
    result = reader.result()

    # The request arrived through the kubelet's refresh of the downward-API volume (nobody else writes it).
    refresh = written - requested
    print(f"downward-API refresh {refresh:.2f}s after the patch; live {acknowledged - requested:.2f}s after it; "
          f"the reader saw {result['sequence']} ({result['perSecond']} trees a second)")
    assert 0 <= refresh < acknowledged - requested, (requested, written, acknowledged)
    assert entry["sha256"] == version["sha256"]
    # The reader saw the old tree, then the new one: never a mix, never nothing, never back.
    assert result["problemCount"] == 0, result["problems"]
    assert [label for label, _ in result["sequence"]] == [live, label], result["sequence"]
    assert result["sequence"][-1][1] >= 300, result
    # The app kept running: no container restarted or was replaced.
    after = injectedkit.container_statuses(cluster.core.read_namespaced_pod(name, namespace))
    for container in ("app", containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ):
        assert after[container].restart_count == 0, container
        assert after[container].container_id == before[container].container_id, container
    seen = json.loads(injectedkit.http_get(f"http://{data_app.ip}:{injectedkit.APP_PORT}/data") or b"{}")
    assert seen["versions"] == {LIVE: version["version"]}


def test_injected_containers_write_nothing_outside_their_volumes_under_pod_security_restricted(
        cluster: harness.Cluster, repository: RepositoryPod, data_app: DataApp) -> None:
    for namespace in (data_app.namespace, repository.namespace):
        labels = cluster.core.read_namespace(namespace).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The namespace really enforces it: a pod that runs as root is refused.
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(data_app.namespace, {
            "metadata": {"name": "as-root"},
            "spec": injectedkit.pod_spec([{"name": "c", "image": "registry.invalid/c:1",
                                           "securityContext": {"runAsUser": 0}}])}, dry_run="All")
    assert refused.value.status == 403 and "restricted" in refused.value.body

    # Each container's root filesystem is read-only, and its overlay's upper directory holds nothing
    # but the mount points runc made: every write went to a volume.
    pods = [cluster.core.read_namespaced_pod(data_app.name, data_app.namespace),
            cluster.core.read_namespaced_pod("datarepo", repository.namespace)]
    checked = []
    for pod in pods:
        for name, status in injectedkit.container_statuses(pod).items():
            assert_writes_nothing(f"{pod.metadata.name}/{name}", status.container_id)
            checked.append(name)
    assert set(INJECTED) <= set(checked)


def assert_writes_nothing(what: str, container_id: str) -> None:
    assert injectedkit.root_filesystem(container_id).read_only, f"{what}: the root filesystem is writable"
    writes = injectedkit.unexpected_writes(container_id)
    assert not writes, f"{what} wrote outside its volumes: {writes}"


# --- readiness, evictions, Jobs ------------------------------------------------------------------

def _wait_endpoint(cluster: harness.Cluster, namespace: str, pod: str, ready: bool, timeout: float,
                   others: dict[str, bool] | None = None) -> float:
    """Wait until ``pod``'s endpoint in Service ``web`` is ``ready``; meanwhile ``others`` must hold. The time."""
    def reached() -> float | None:
        found = injectedkit.endpoints(cluster, namespace, "web")
        for other, expected in (others or {}).items():
            assert found.get(other) is expected, f"{other}'s endpoint: {found.get(other)}, expected {expected}"
        return time.time() if found.get(pod) is ready else None

    try:
        return wait_until(f"{pod}'s endpoint ready={ready}", reached, timeout=timeout, interval=0.2)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; {_readiness_chain(cluster, namespace, pod)}") from None


def _readiness_chain(cluster: harness.Cluster, namespace: str, pod: str) -> str:
    """Where a readiness change stalled: the downward-API file, watchdoghealthz's answer, the kubelet's
    view of the container, the pod's Ready condition (each is one link between a status and the slice)."""
    found = cluster.core.read_namespaced_pod(pod, namespace)
    status = injectedkit.container_statuses(found).get(containers.WATCHDOGHEALTHZ)
    url = f"http://127.0.0.1:{inpod.WATCHDOGHEALTHZ_PORT}{inpod.HEALTHZ_PATH}"
    probe = ("import urllib.request, urllib.error\n"
             f"try: r = urllib.request.urlopen({url!r}, timeout=2); print(r.status, r.read()[:200])\n"
             "except urllib.error.HTTPError as e: print(e.code, e.read()[:200])")
    answer = injectedkit.exec_in(cluster, namespace, pod, containers.WATCHDOGHEALTHZ, "python3", "-c", probe,
                                 check=False)
    written = injectedkit.downward_api_written_at(cluster, namespace, pod, containers.WATCHDOGHEALTHZ)
    return (f"downward-API file written {time.time() - written:.1f}s ago; /healthz answers "
            f"{(answer.stdout or answer.stderr).strip()!r}; kubelet: container ready={status and status.ready}, "
            f"pod Ready={_ready(found)}")


@pytest.mark.parametrize("native", [False, True], ids=["classic", "native"])
def test_watchdoghealthz_keeps_the_pod_out_of_its_endpointslice_for_min_ready_seconds_and_while_in_error(
        cluster: harness.Cluster, namespace: str, injector: webhookkit.Injector, native: bool) -> None:
    """Native: watchdoghealthz is an init container with ``restartPolicy: Always``, whose readiness the
    kubelet counts in the pod's (a sidecar's readiness probe is not only for its own restarts)."""
    min_ready = 6  # more than the injected readinessProbe's period (5 s), so one probe cannot hide it
    injectedkit.label_restricted(cluster, namespace)
    cluster.core.create_namespaced_service(namespace, injectedkit.service("web"))
    cluster.apps.create_namespaced_deployment(namespace, injectedkit.deployment("web", 2, {
        keys.MIN_READY_SECONDS: str(min_ready), keys.NATIVE_SIDECAR: str(native).lower()}, data=False))

    def started() -> dict[str, float]:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items
        running = {p.metadata.name: injectedkit.container_statuses(p).get(containers.WATCHDOGHEALTHZ) for p in pods}
        times = {n: s.state.running.started_at.timestamp() for n, s in running.items() if s and s.state.running}
        return times if len(times) == 2 else {}

    starts = wait_until("watchdoghealthz running in both pods", started, timeout=90)
    for pod in cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items:
        init = [(c.name, c.restart_policy) for c in pod.spec.init_containers or []]
        assert init == ([(containers.WATCHDOGHEALTHZ, "Always")] if native else []), init
    # Listed, but not ready, until min-ready-seconds have passed without an error watchdog.
    not_ready_seen = set()

    def both_ready() -> dict[str, float] | None:
        found = injectedkit.endpoints(cluster, namespace, "web")
        not_ready_seen.update(n for n, ready in found.items() if not ready)
        return {n: time.time() for n in found} if len(found) == 2 and all(found.values()) else None

    ready_at = wait_until("both endpoints ready", both_ready, timeout=60, interval=0.2)
    for pod, start in starts.items():
        print(f"{pod}: endpoint ready {ready_at[pod] - start:.1f}s after watchdoghealthz started")
        assert ready_at[pod] - start >= min_ready, (pod, start, ready_at[pod])
    assert not_ready_seen == set(starts)

    # An error watchdog takes one pod out; the other stays in.
    failing, healthy = sorted(starts)
    posted = time.time()
    injectedkit.post_status(cluster, namespace, failing, watchdogs.Level.ERROR, "disk on fire")
    out = _wait_endpoint(cluster, namespace, failing, False, 90, others={healthy: True})
    print(f"error status to out of the EndpointSlice: {out - posted:.1f}s")
    pod = cluster.core.read_namespaced_pod(failing, namespace)
    assert not injectedkit.container_statuses(pod)[containers.WATCHDOGHEALTHZ].ready

    # Cleared: back in only after min-ready-seconds more.
    cleared = time.time()
    injectedkit.post_status(cluster, namespace, failing, watchdogs.Level.INFO, "recovered")
    back = _wait_endpoint(cluster, namespace, failing, True, 90, others={healthy: True})
    print(f"cleared to back in the EndpointSlice: {back - cleared:.1f}s")
    assert back - cleared >= min_ready
    assert all(s.restart_count == 0 for p in cluster.core.list_namespaced_pod(namespace).items
               for s in injectedkit.container_statuses(p).values())


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_the_controller_evicts_a_pod_in_error_within_its_pdb_and_the_replacement_comes_up_healthy(
        cluster: harness.Cluster, namespace: str, injector: webhookkit.Injector) -> None:
    injectedkit.label_restricted(cluster, namespace)
    probe = {keys.PROBE_PREFIX + "app": f"POD_IP:{injectedkit.APP_PORT}/watchdog"}
    cluster.apps.create_namespaced_deployment(namespace, injectedkit.deployment(
        "web", 2, {**probe, keys.MIN_READY_SECONDS: "1"}, data=False))
    cluster.policy.create_namespaced_pod_disruption_budget(namespace, {
        "metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
    victim, survivor = sorted(p.metadata.name for p in nodekit.ready_pods(cluster, namespace, "web", 2, timeout=90))
    wait_until("the PDB to allow one disruption", lambda: (
        pdb := cluster.policy.read_namespaced_pod_disruption_budget("web", namespace)).status
        and pdb.status.disruptions_allowed == 1)

    with controller(cluster, namespace):
        wait_until("the controller to see both pods healthy", lambda: all(
            (p.metadata.labels or {}).get(watchdogs.HEALTH_LABEL) == "info"
            for p in cluster.core.list_namespaced_pod(namespace).items))
        ip = cluster.core.read_namespaced_pod(victim, namespace).status.pod_ip
        assert injectedkit.http_post(f"http://{ip}:{injectedkit.APP_PORT}/fail") == b"will fail"

        def replaced() -> Any:
            pods = {p.metadata.name: p for p in cluster.core.list_namespaced_pod(namespace).items}
            assert survivor in pods and _ready(pods[survivor]), "the survivor must stay Ready"
            new = [p for n, p in pods.items() if n not in (victim, survivor) and p.metadata.deletion_timestamp is None]
            healthy = [p for p in new if _ready(p) and (p.metadata.labels or {}).get(watchdogs.HEALTH_LABEL) == "info"]
            return victim not in pods and healthy and healthy[0]

        replacement = wait_until("the victim evicted and a healthy replacement", replaced, timeout=120, interval=0.5)
    evicted = pod_events(cluster, namespace, victim, "Evicted")
    assert evicted, "the controller evicts through the Eviction API and says so"
    assert replacement.spec.node_name == cluster.real_node
    assert all(s.restart_count == 0 for s in injectedkit.container_statuses(replacement).values())


def test_a_job_with_data_completes_with_native_sidecars(
        cluster: harness.Cluster, namespace: str, injector: webhookkit.Injector, repository: RepositoryPod) -> None:
    """The Job's pod is created without a request; the one written afterwards reaches its native
    sidecar through the kubelet's refresh (else it would fall back to the first version after 90 s)."""
    injectedkit.label_restricted(cluster, namespace)
    label = f"job-{uuid.uuid4().hex[:8]}"
    version = repository.publish(label)
    template = {"metadata": {"labels": {"app": "job"}, "annotations": injectedkit.data_annotations(None)},
                "spec": injectedkit.pod_spec([injectedkit.app_container(
                    command=["sh", "-c", f"head -n1 {LIVE}/part-00 && test -r {LIVE}/part-15"])],
                    restartPolicy="Never")}
    jobs = client.BatchV1Api(cluster.api)
    jobs.create_namespaced_job(namespace, {"metadata": {"name": "job"}, "spec": {"backoffLimit": 0,
                                                                                 "template": template}})
    pod = wait_until("the Job's pod", lambda: next(iter(
        cluster.core.list_namespaced_pod(namespace, label_selector="app=job").items), None))
    assert [(c.name, c.restart_policy) for c in pod.spec.init_containers] == [(containers.DATADEPLOYER, "Always")]
    requested = time.monotonic()
    cluster.core.patch_namespaced_pod(pod.metadata.name, namespace, {"metadata": {"annotations": {
        keys.REQUEST_DATA_PREFIX + DATA_SET: injectedkit.request_value(version)}}})

    def finished() -> bool:
        job = jobs.read_namespaced_job("job", namespace)
        conditions = {c.type: c.status for c in job.status.conditions or []}
        assert conditions.get("Failed") != "True", f"the Job failed: {job.status}"
        return conditions.get("Complete") == "True"

    wait_until("the Job complete", finished, timeout=60, interval=0.5)
    print(f"Job: request to complete {time.monotonic() - requested:.1f}s")
    pod = cluster.core.read_namespaced_pod(pod.metadata.name, namespace)
    assert pod.status.phase == "Succeeded"
    assert nodekit.kubectl(cluster, "logs", "-n", namespace, pod.metadata.name, "-c", "app").stdout == f"{label}\n"
    statuses = injectedkit.container_statuses(pod)
    # The native sidecar did the first sync, then stopped with the pod: on SIGTERM, exit 0.
    assert statuses[containers.DATADEPLOYER].state.terminated.exit_code == 0
    for name, status in statuses.items():
        assert_writes_nothing(f"{pod.metadata.name}/{name}", status.container_id)
