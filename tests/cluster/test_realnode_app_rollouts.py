"""Staged app rollouts in real containers on the real node (docs/app-rollouts.md, "Tests and measurements").

The one behaviour of the KWOK tests (test_app_rollouts.py) worth repeating with real containers:
a two-stage group of ``autocrane testworkload`` pods (the sidecar image, Pod Security
``restricted``) rolls a good release forward stage by stage, then rolls a bad one back while the
later stage never starts a container of it. Real pods take seconds to start and become ready,
their watchdogs answer on CNI addresses the controller reaches from the host, and the kubelet's
readiness gates ``availableReplicas``, which the gate reads; the webhook and the controller run
as local processes.

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


def _deployment(name: str, stage: int) -> dict[str, Any]:
    labels = {"app": name}
    container = injectedkit.app_container(data=False)
    container["env"] = [{"name": "RELEASE", "value": "1"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {approllouts.GROUP_LABEL: "real",
                                                  approllouts.STAGE_LABEL: str(stage)}},
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


def test_real_containers_roll_a_good_release_forward_and_a_bad_one_back_before_stage_1_starts_it(
        cluster: harness.Cluster, group: tuple[str, ControllerProcess]) -> None:
    namespace, proc = group
    try:
        kit.create_group(cluster, namespace, "real", _deployment("real-canary", 0), _deployment("real-zone", 1),
                         bakeSeconds=2, progressDeadlineSeconds=120)
        for name in ("real-canary", "real-zone"):
            assert _release(cluster, namespace, name, "2").spec.paused is True
        wait_until("release 2 on both stages", lambda: all(
            _runs(cluster, namespace, n, "2") for n in ("real-canary", "real-zone")), timeout=180)
        kit.wait_phase(cluster, namespace, "real", "Healthy", timeout=60)
        lines = sorted((line for line in proc.lines() if line.get("message") in ("stage released", "stage baked")),
                       key=kit.when)
        assert [(line["message"], line["stage"]) for line in lines] == [
            ("stage released", 0), ("stage baked", 0), ("stage released", 1), ("stage baked", 1)]

        for name in ("real-canary", "real-zone"):
            _release(cluster, namespace, name, "3")
        wait_until("a canary pod of release 3 told to fail", lambda: _fail_new_pods(
            cluster, namespace, "real-canary", "3"), timeout=120)
        kit.wait_phase(cluster, namespace, "real", "RolledBack", reason="Watchdog", timeout=60)
        wait_until("the canary back on release 2", lambda: _runs(cluster, namespace, "real-canary", "2"), timeout=120)
        assert "3" not in _release_of(cluster, namespace, "real-zone")
        zone = cluster.apps.read_namespaced_deployment("real-zone", namespace)
        assert zone.spec.paused is True
    except BaseException:
        print(f"--- controller log tail ---\n{proc.tail(60)}")
        raise
