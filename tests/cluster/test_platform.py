"""The whole platform installed by helm from the images built here, on the real node (issue 11, item 5).

One release per module, installed as `make dev` installs it (``devcluster.helmstack.values``: the
images, the real node's placement, a directory source through a read-only PersistentVolume), as
release ``autocrane`` (the README's name) in a namespace of its own. The tests run in order:

1. an opted-in namespace's pods get their data from the chart's own repository;
2. a new version rolls out through its stages to completion while the app keeps running;
3. a write without the token is refused, from a pod in the app's namespace too;
4. ``helm upgrade`` with changed values rolls the pods they affect, and only those;
5. ``helm test`` passes;
6. ``helm uninstall`` leaves nothing but what the values keep, checked over every kind the API
   server lists.

Waits are bounded and on conditions; bake and poll times are a few seconds through values.
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import helmstack, node, stack
from tests.cluster import harness, helmkit, nodekit
from tests.cluster.harness import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

RELEASE = "autocrane"
CRDS = ("datarollouts.autocrane.io", "approllouts.autocrane.io")
"""What the chart installs and crds.keep keeps."""
SOURCE = helmstack.SOURCE
REQUEST_KEY = "request.data.autocrane.io/model"
IGNORED_KINDS = {"events", "events.events.k8s.io"}
"""Written by the cluster about everything, and expired by it (one hour): not the release's to remove."""


@dataclass
class Platform(helmkit.Release):
    before: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    """Every object (kind, namespace, name) before the install: in the release namespace, and cluster-wide."""

    def pods(self, namespace: str, selector: str) -> list[Any]:
        return [p for p in self.cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
                if p.metadata.deletion_timestamp is None]

    def component(self, name: str) -> list[Any]:
        return self.pods(self.namespace, f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={name}")

    def repository_url(self) -> str:
        (pod,) = self.component("datarepository")
        return f"http://{pod.status.pod_ip}:8080"

    def manifest(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.repository_url()}/v1/sources/{SOURCE}", timeout=5) as answer:
            loaded: dict[str, Any] = json.loads(answer.read())
            return loaded

    def rollout(self) -> dict[str, Any]:
        try:
            found: dict[str, Any] = client.CustomObjectsApi(self.cluster.api).get_namespaced_custom_object(
                "autocrane.io", "v1alpha1", self.apps, "datarollouts", SOURCE)
        except client.exceptions.ApiException:
            return {}
        return found


def _seen(pod: Any) -> str | None:
    """The version the app in ``pod`` reads now (its GET /data)."""
    try:
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:{stack.APP_PORT}/data", timeout=3) as answer:
            versions = json.loads(answer.read())["versions"]
    except (OSError, ValueError, KeyError):
        return None
    value = versions.get("/autocrane/data/model")
    return value if isinstance(value, str) else None


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _objects(cluster: harness.Cluster, namespace: str | None) -> set[tuple[str, str, str]]:
    """Every object of every listable kind, in ``namespace`` or cluster-scoped (None)."""
    scope = ["--namespaced=true"] if namespace else ["--namespaced=false"]
    kinds = nodekit.kubectl(cluster, "api-resources", "--verbs=list,delete", "-o", "name", *scope).stdout.split()
    kinds = sorted(set(kinds) - IGNORED_KINDS)
    assert len(kinds) > (20 if namespace else 15), f"discovery listed too few kinds: {kinds}"
    where = ["-n", namespace] if namespace else []
    listed = json.loads(nodekit.kubectl(cluster, "get", ",".join(kinds), *where, "-o", "json", timeout=120).stdout)
    return {(item["kind"], namespace or "", item["metadata"]["name"]) for item in listed["items"]}


def _snapshot(cluster: harness.Cluster, namespace: str) -> dict[str, set[tuple[str, str, str]]]:
    return {"namespace": _objects(cluster, namespace), "cluster": _objects(cluster, None)}


def _without_the_crd(cluster: harness.Cluster) -> None:
    """Delete the CRDs other tests made (kept by another release, or by install_crd): the release
    installs its own, and Helm refuses to adopt an object another release or nobody owns."""
    extensions = client.ApiextensionsV1Api(cluster.api)
    for name in CRDS:
        with contextlib.suppress(client.exceptions.ApiException):
            extensions.delete_custom_resource_definition(name)

    def gone() -> bool:
        for name in CRDS:
            try:
                extensions.read_custom_resource_definition(name)
            except client.exceptions.ApiException as error:
                if error.status != 404:
                    return False
            else:
                return False
        return True

    wait_until("the CRDs of earlier tests deleted", gone, timeout=60)


def _tune(values: dict[str, Any]) -> None:
    values["controller"]["extraArgs"] = ["--bake-seconds=3", "--progress-deadline=120", "--min-pod-age=30"]
    values["dataRepository"]["persistence"]["keepOnUninstall"] = False


def _before_install(platform: Platform) -> None:
    _without_the_crd(platform.cluster)
    platform.before = _snapshot(platform.cluster, platform.namespace)


@pytest.fixture(scope="module")
def platform(cluster: harness.Cluster) -> Iterator[Platform]:
    with helmkit.platform_release(cluster, RELEASE, Platform, _tune, _before_install) as release:
        yield release


@pytest.fixture(scope="module")
def sample(platform: Platform) -> list[Any]:
    """The sample app (3 pods) in the opted-in namespace, with stages 1, 2, 100% and a 3 s bake."""
    client.CustomObjectsApi(platform.cluster.api).create_namespaced_custom_object(
        "autocrane.io", "v1alpha1", platform.apps, "datarollouts",
        {"apiVersion": "autocrane.io/v1alpha1", "kind": "DataRollout", "metadata": {"name": SOURCE},
         "spec": {"source": SOURCE, "stages": ["1", "2", "100%"], "bakeSeconds": 3}})
    deployment = stack._sample_deployment(platform.images["sidecar"].ref, node.placement(), "Never")
    platform.cluster.apps.create_namespaced_deployment(platform.apps, deployment)

    def ready() -> list[Any]:
        pods = [p for p in platform.pods(platform.apps, "app=sample") if _ready(p)]
        return pods if len(pods) == 3 else []

    return wait_until("3 sample pods Ready", ready, timeout=180)


def test_an_opted_in_namespaces_pods_get_their_data_from_the_charts_repository(
        platform: Platform, sample: list[Any]) -> None:
    (v1,) = [v["version"] for v in platform.manifest()["versions"]]
    for pod in sample:
        status = json.loads(pod.metadata.annotations["injector.autocrane.io/status"])
        assert status["initContainers"] == ["autocrane-datadeployer-init"], "injected by the chart's webhook"
        container = {c.name: c for c in pod.spec.containers}["autocrane-datadeployer"]
        assert f"http://{RELEASE}-datarepository.{platform.namespace}.svc:8080" in container.command
        assert _seen(pod) == v1, "the app reads the repository's version"


def test_a_new_version_rolls_out_through_its_stages_while_the_app_keeps_running(
        platform: Platform, sample: list[Any]) -> None:
    (v1,) = [v["version"] for v in platform.manifest()["versions"]]
    wait_until("the rollout idle on v1", lambda: (platform.rollout().get("status") or {}).get("lastKnownGood") == v1)
    (platform.data / SOURCE / "greeting.txt").write_text("version 2\n")
    v2 = wait_until("the repository's new version", lambda: (
        platform.manifest()["versions"][-1]["version"] if len(platform.manifest()["versions"]) == 2 else None),
        timeout=30)
    stages: list[int] = []

    def done() -> bool:
        status = platform.rollout().get("status") or {}
        if status.get("target") == v2 and status.get("stage") and status["stage"] not in stages:
            stages.append(status["stage"])
        return status.get("phase") == "Succeeded" and status.get("lastKnownGood") == v2

    wait_until("v2 rolled out to every pod", done, timeout=150, interval=0.2)
    assert stages == [1, 2, 3], f"every stage in turn, got {stages}"
    pods = platform.pods(platform.apps, "app=sample")
    assert {p.metadata.uid for p in pods} == {p.metadata.uid for p in sample}, "the app was never restarted"
    assert all(s.restart_count == 0 for p in pods for s in p.status.container_statuses)
    assert [_seen(p) for p in pods] == [v2] * 3, "every app reads v2 now"
    manifest = platform.manifest()
    assert manifest["lastKnownGoodByNamespace"] == {platform.apps: v2} and manifest["lastKnownGood"] == v2


def _put(url: str, token: str | None) -> int:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"{url}/v1/sources/{SOURCE}/last-known-good", method="PUT", headers=headers,
                                     data=json.dumps({"version": "x", "namespace": "someone"}).encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_write_without_the_token_is_refused(platform: Platform, sample: list[Any]) -> None:
    url = platform.repository_url()
    assert _put(url, None) == 401 and _put(url, "guess") == 401
    secret = platform.cluster.core.read_namespaced_secret(f"{RELEASE}-datarepository-token", platform.namespace)
    token = base64.b64decode(secret.data["token"]).decode()
    assert _put(url, token) == 404, "the token gets past authentication (the version does not exist)"
    service = f"http://{RELEASE}-datarepository.{platform.namespace}.svc:8080"
    script = ("import json, urllib.request as r, urllib.error as e\n"
              f"q = r.Request('{service}/v1/sources/{SOURCE}/last-known-good', method='PUT', "
              "data=b'{\"version\": \"x\"}', headers={'Content-Type': 'application/json'})\n"
              "try: r.urlopen(q, timeout=5)\nexcept e.HTTPError as x: print(x.code)\n"
              f"print(r.urlopen('{service}/v1/manifest', timeout=5).status)\n")
    answered = nodekit.kubectl(platform.cluster, "exec", "-n", platform.apps, sample[0].metadata.name, "-c", "app",
                               "--", "/opt/autocrane/bin/python", "-c", script)
    assert answered.stdout.split() == ["401", "200"], "a pod elsewhere may read, never write"


def test_helm_upgrade_with_changed_values_rolls_the_pods_they_affect(platform: Platform, sample: list[Any]) -> None:
    def uids(component: str) -> set[str]:
        return {p.metadata.uid for p in platform.component(component)}

    before = {c: uids(c) for c in ("injector", "controller", "datarepository")}
    token = platform.cluster.core.read_namespaced_secret(f"{RELEASE}-datarepository-token", platform.namespace).data
    upgraded = platform.helm("upgrade", RELEASE, str(helmkit.CHART), "-f", str(platform.values),
                             "--set", "injector.data_size_limit=2Gi", "--set", "controller.interval=3",
                             "--wait", "--timeout", "3m")
    assert upgraded.returncode == 0, upgraded.stderr

    def rolled() -> bool:
        return all(len(platform.component(c)) == 2 and not uids(c) & before[c] for c in ("injector", "controller"))

    wait_until("the webhook and the controller replaced", rolled, timeout=120)
    assert uids("datarepository") == before["datarepository"], "the repository's values did not change"
    assert platform.cluster.core.read_namespaced_secret(
        f"{RELEASE}-datarepository-token", platform.namespace).data == token, "the token is kept across upgrades"
    platform.cluster.apps.patch_namespaced_deployment_scale("sample", platform.apps, {"spec": {"replicas": 4}})
    fresh = wait_until("a 4th sample pod", lambda: [p for p in platform.pods(platform.apps, "app=sample")
                                                    if p.metadata.uid not in {s.metadata.uid for s in sample}])
    (data,) = [v for v in fresh[0].spec.volumes if v.name == "autocrane-data"]
    assert data.empty_dir.size_limit == "2Gi", "the new webhook pods inject with the new configuration"
    wait_until("the 4th pod Ready with data", lambda: _ready(platform.cluster.core.read_namespaced_pod(
        fresh[0].metadata.name, platform.apps)), timeout=120)


def test_helm_test_passes(platform: Platform) -> None:
    tested = platform.helm("test", RELEASE, timeout=180)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Phase:          Succeeded" in tested.stdout


def test_helm_uninstall_leaves_nothing_but_what_the_values_keep(platform: Platform) -> None:
    rendered = {d["kind"] for d in yaml.safe_load_all(platform.helm(
        "get", "manifest", RELEASE).stdout) if d}
    during = _snapshot(platform.cluster, platform.namespace)
    made = {kind for kind, _, _ in (during["namespace"] - platform.before["namespace"]) | (
        during["cluster"] - platform.before["cluster"])}
    assert rendered <= made | {"CustomResourceDefinition"}, "the snapshot sees every kind the chart makes"
    assert ("Secret", platform.namespace, f"{RELEASE}-injector-ca") in during["namespace"], "the webhook's own CA"
    assert ("PersistentVolumeClaim", platform.namespace, f"data-{RELEASE}-datarepository-0") in during["namespace"]
    removed = platform.helm("uninstall", RELEASE, "--wait", timeout=180)
    assert removed.returncode == 0, removed.stderr
    platform.installed = False
    # crds.keep (the default), and the local APIService the API server registers for a CRD's group
    kept = {*(("CustomResourceDefinition", "", name) for name in CRDS), ("APIService", "", "v1alpha1.autocrane.io")}

    left: list[set[tuple[str, str, str]]] = []

    def clean() -> bool:
        after = _snapshot(platform.cluster, platform.namespace)
        left.append((after["namespace"] - platform.before["namespace"]) |
                    (after["cluster"] - platform.before["cluster"]))
        return left[-1] <= kept

    # The garbage collector deletes what the release's objects owned (pods, the CA Secret, the volume's
    # claim and, released, the volume itself): moments after helm returns.
    try:
        wait_until("nothing left but the CRDs", clean, timeout=90, interval=1)
    except AssertionError as error:
        raise AssertionError(f"{error}; left: {sorted(left[-1] - kept)}") from None
    assert {("CustomResourceDefinition", "", name) for name in CRDS} <= _objects(platform.cluster, None)
