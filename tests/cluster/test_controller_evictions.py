"""Evictions on the real control plane: PDBs block (429) without stopping the controller, the circuit
breaker holds when most of a workload fails, and dry-run evicts nothing."""

from __future__ import annotations

import pytest

from tests.cluster import harness
from tests.cluster.controllerkit import Fleet, controller, deployment, free_port, live_pods, pod_events, ready_pods
from tests.cluster.harness import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _local_only(cluster: harness.Cluster) -> None:
    if not cluster.local:
        pytest.skip("watchdogs are served on loopback pod IPs only on the local KWOK control plane")


def _names(cluster: harness.Cluster, namespace: str, app: str) -> set[str]:
    return {p.metadata.name for p in live_pods(cluster, namespace, app)}


def _pdb_settled(cluster: harness.Cluster, namespace: str, name: str, allowed: int) -> bool:
    pdb = cluster.policy.read_namespaced_pod_disruption_budget(name, namespace)
    return bool(pdb.status and pdb.status.observed_generation == pdb.metadata.generation
                and pdb.status.disruptions_allowed == allowed)


def test_a_pdb_blocks_one_eviction_with_429_and_the_controller_keeps_evicting_others(
    cluster: harness.Cluster, namespace: str
) -> None:
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("guarded", 3, port))
    cluster.apps.create_namespaced_deployment(namespace, deployment("free", 3, port))
    guarded = ready_pods(cluster, namespace, "guarded", 3)[0].metadata.name
    free = ready_pods(cluster, namespace, "free", 3)[0].metadata.name
    cluster.policy.create_namespaced_pod_disruption_budget(namespace, {
        "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "guarded"}}},
    })
    wait_until("the PDB allowing no disruption", lambda: _pdb_settled(cluster, namespace, "guarded", 0))
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace) as proc:
        fleet.failing |= {guarded, free}

        blocked = wait_until("an EvictionBlocked event on the guarded pod",
                             lambda: pod_events(cluster, namespace, guarded, "EvictionBlocked"))
        assert blocked[0].type == "Warning" and "disruption budget" in blocked[0].message
        wait_until("the unguarded failing pod evicted and replaced", lambda: free not in _names(
            cluster, namespace, "free") and len(_names(cluster, namespace, "free")) == 3)
        assert guarded in _names(cluster, namespace, "guarded")
        assert proc.process is not None and proc.process.poll() is None, "the controller must keep running"


def test_a_pod_two_budgets_select_is_held_and_reported_like_a_pdb_block(
    cluster: harness.Cluster, namespace: str
) -> None:
    # The Eviction API answers 500 "more than one PodDisruptionBudget" for such a pod: evicting it is
    # refused whatever the budgets allow, so it is backed off and reported, not retried every pass.
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("twice", 3, port))
    victim = ready_pods(cluster, namespace, "twice", 3)[0].metadata.name
    for name in ("one", "two"):
        cluster.policy.create_namespaced_pod_disruption_budget(namespace, {
            "metadata": {"name": name}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "twice"}}}})
        wait_until(f"the PDB {name} observed", lambda name=name: _pdb_settled(cluster, namespace, name, 1))
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace) as proc:
        fleet.failing.add(victim)

        blocked = wait_until("an EvictionBlocked event on the pod",
                             lambda: pod_events(cluster, namespace, victim, "EvictionBlocked"))
        assert blocked[0].type == "Warning" and "more than one PodDisruptionBudget" in blocked[0].message
        assert victim in _names(cluster, namespace, "twice")
        assert proc.count("eviction failed") == 0


def test_the_circuit_breaker_holds_when_most_pods_of_a_workload_fail(cluster: harness.Cluster, namespace: str) -> None:
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("web", 3, port))
    pods = {p.metadata.name for p in ready_pods(cluster, namespace, "web", 3)}
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace) as proc:
        fleet.fail_everything = True

        for name in pods:
            events = wait_until(f"a CircuitBreakerOpen event on {name}",
                                lambda name=name: pod_events(cluster, namespace, name, "CircuitBreakerOpen"))
            assert events[0].type == "Warning" and "3 of 3 pods of ReplicaSet" in events[0].message
        held = proc.count("pass done", lambda line: line.get("breakers") == 1)
        wait_until("ten more passes with the breaker open", lambda: proc.count(
            "pass done", lambda line: line.get("breakers") == 1) >= held + 10)
        assert _names(cluster, namespace, "web") == pods
        assert all(not pod_events(cluster, namespace, name, "Evicted") for name in pods)


def test_dry_run_reports_the_eviction_and_evicts_nothing(cluster: harness.Cluster, namespace: str) -> None:
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("web", 3, port))
    pods = {p.metadata.name for p in ready_pods(cluster, namespace, "web", 3)}
    victim = sorted(pods)[0]
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace, "--dry-run") as proc:
        fleet.failing.add(victim)

        events = wait_until("an EvictionDryRun event", lambda: pod_events(cluster, namespace, victim, "EvictionDryRun"))
        assert "would evict (dry run)" in events[0].message
        seen = proc.count("pass done")
        wait_until("five more passes", lambda: proc.count("pass done") >= seen + 5)
        assert _names(cluster, namespace, "web") == pods
