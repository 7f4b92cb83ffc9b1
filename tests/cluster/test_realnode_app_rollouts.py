"""Staged app rollouts in real containers on the real node (docs/app-rollouts.md, "Tests and measurements").

The behaviours of the KWOK tests (test_app_rollouts.py) worth repeating with real containers:
a three-stage group of ``autocrane testworkload`` pods (the sidecar image, Pod Security
``restricted``) rolls a good release forward stage by stage, then rolls a bad one back while the
later stages never start a container of it; and a lone Deployment rolls itself back. Real pods
take seconds to start and become ready, their watchdogs answer on CNI addresses the controller
reaches from the host, and the kubelet's readiness gates ``availableReplicas``, which the gate
reads; the webhook and the controller run as local processes.

The bad release is a template change whose pods the test tells to fail (``POST /fail``, the
testworkload's switch) as soon as they answer: the watchdog then fails in the container itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from autocrane import approllouts
from tests.cluster import approlloutkit as kit
from tests.cluster import harness, injectedkit, webhookkit
from tests.cluster.controllerkit import ControllerProcess, running
from tests.cluster.harness import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]
PORT = injectedkit.APP_PORT


def _deployment(name: str, stage: int | None, group: str = "real") -> dict[str, Any]:
    """A testworkload Deployment of ``group`` at RELEASE 1; ``stage`` None: the group label only."""
    labels = {"app": name}
    container = injectedkit.app_container(data=False)
    container["env"] = [{"name": "RELEASE", "value": "1"}]
    rollout = {approllouts.GROUP_LABEL: group}
    if stage is not None:
        rollout[approllouts.STAGE_LABEL] = str(stage)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": rollout},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels,
                                               "annotations": {"probe.autocrane.io/app": f"POD_IP:{PORT}/watchdog"}},
                                  "spec": injectedkit.pod_spec([container])}}}


def _release(cluster: harness.Cluster, namespace: str, name: str, release: str) -> Any:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [
        {"name": "RELEASE", "value": release}]}]}}}}
    return cluster.apps.patch_namespaced_deployment(name, namespace, patch)


def _release_of(cluster: harness.Cluster, namespace: str, name: str) -> set[str]:
    """RELEASE of every ReplicaSet the Deployment owns."""
    found = set()
    for rs in cluster.apps.list_namespaced_replica_set(namespace).items:
        if any(ref.name == name for ref in rs.metadata.owner_references or ()):
            found |= {e.value for e in rs.spec.template.spec.containers[0].env or () if e.name == "RELEASE"}
    return found


def _runs(cluster: harness.Cluster, namespace: str, name: str, release: str) -> bool:
    d = cluster.apps.read_namespaced_deployment(name, namespace)
    env = {e.name: e.value for e in d.spec.template.spec.containers[0].env or ()}
    s = d.status
    done = (s.updated_replicas or 0) == (s.available_replicas or 0) == (s.replicas or 0) == d.spec.replicas
    return (env.get("RELEASE") == release and not d.spec.paused
            and (s.observed_generation or 0) >= d.metadata.generation and done)


@pytest.fixture(scope="module")
def group(cluster: harness.Cluster, real_node: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[str, ControllerProcess]]:
    kit.install_crd(cluster)
    namespace = injectedkit.create_restricted_namespace(cluster, "approll-real", inject=False)
    try:
        with webhookkit.registered(cluster, tmp_path_factory.mktemp("injector")), \
                running(ControllerProcess(cluster, namespace, identity="real")) as proc:
            yield namespace, proc
    finally:
        cluster.delete_namespace(namespace)


def _fail_new_pods(cluster: harness.Cluster, namespace: str, app: str, release: str) -> bool:
    """Tell every running pod of ``release`` to fail its watchdog; whether one was told."""
    told = False
    for pod in cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items:
        env = {e.name: e.value for e in pod.spec.containers[0].env or ()}
        if env.get("RELEASE") == release and pod.status.pod_ip and pod.metadata.deletion_timestamp is None:
            told |= injectedkit.http_post(f"http://{pod.status.pod_ip}:{PORT}/fail") is not None
    return told


def test_real_containers_roll_a_good_release_forward_and_a_bad_one_back_before_later_stages_start_it(
        cluster: harness.Cluster, group: tuple[str, ControllerProcess]) -> None:
    namespace, proc = group
    stages = {"real-canary": 0, "real-zone-a": 1, "real-zone-b": 2}
    later = ("real-zone-a", "real-zone-b")
    try:
        kit.create_group(cluster, namespace, "real", *(_deployment(n, s) for n, s in stages.items()),
                         bakeSeconds=2, progressDeadlineSeconds=120)
        for name in stages:
            assert _release(cluster, namespace, name, "2").spec.paused is True
        wait_until("release 2 on every stage", lambda: all(
            _runs(cluster, namespace, n, "2") for n in stages), timeout=180)
        kit.wait_phase(cluster, namespace, "real", "Healthy", timeout=60)
        lines = sorted((line for line in proc.lines() if line.get("group") == "real"
                        and line.get("message") in ("stage released", "stage baked")), key=kit.when)
        assert [(line["message"], line["stage"]) for line in lines] == [
            ("stage released", 0), ("stage baked", 0), ("stage released", 1), ("stage baked", 1),
            ("stage released", 2), ("stage baked", 2)], "each stage released once, after the previous one baked"

        for name in stages:
            _release(cluster, namespace, name, "3")
        wait_until("a canary pod of release 3 told to fail", lambda: _fail_new_pods(
            cluster, namespace, "real-canary", "3"), timeout=120)
        kit.wait_phase(cluster, namespace, "real", "RolledBack", reason="Watchdog", timeout=60)
        wait_until("the canary back on release 2", lambda: _runs(cluster, namespace, "real-canary", "2"), timeout=120)
        for name in later:
            assert "3" not in _release_of(cluster, namespace, name), f"{name} never got a ReplicaSet of release 3"
            assert cluster.apps.read_namespaced_deployment(name, namespace).spec.paused is True
    except BaseException:
        print(f"--- controller log tail ---\n{proc.tail(60)}")
        raise


def test_real_containers_a_lone_deployment_rolls_itself_back(
        cluster: harness.Cluster, group: tuple[str, ControllerProcess]) -> None:
    """The group label alone (no stage): a one-stage rollout. The bake (60 s) outlasts the test, so
    only the failing watchdog in the container can end the release, by rolling it back."""
    namespace, proc = group
    try:
        kit.create_group(cluster, namespace, "solo", _deployment("solo", None, group="solo"),
                         bakeSeconds=60, progressDeadlineSeconds=120)
        assert _release(cluster, namespace, "solo", "2").spec.paused is True
        wait_until("a pod of release 2 told to fail", lambda: _fail_new_pods(cluster, namespace, "solo", "2"),
                   timeout=120)
        failed = kit.wait_phase(cluster, namespace, "solo", "RolledBack", reason="Watchdog", timeout=60)
        assert "watchdog 'app'" in failed["message"]
        wait_until("back on release 1", lambda: _runs(cluster, namespace, "solo", "1"), timeout=120)
        assert failed["deployments"]["solo"]["rejected"] and kit.deployment_events(
            cluster, namespace, "solo", "RevisionRejected")
        wait_until("no live pod of release 2 left", lambda: {_pod_release(p) for p in cluster.core.list_namespaced_pod(
            namespace, label_selector="app=solo").items if p.metadata.deletion_timestamp is None} == {"1"}, timeout=60)
    except BaseException:
        print(f"--- controller log tail ---\n{proc.tail(60)}")
        raise


def _pod_release(pod: Any) -> str | None:
    return next((e.value for e in pod.spec.containers[0].env or () if e.name == "RELEASE"), None)
