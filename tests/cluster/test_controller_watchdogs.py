"""The controller on the real control plane: watchdog statuses, the health label, evictions, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import harness
from tests.cluster.controllerkit import Fleet, controller, deployment, free_port, live_pods, pod_events, ready_pods
from tests.cluster.harness import wait_until

pytestmark = pytest.mark.cluster

STATUS = "status.autocrane.io/app"
HEALTH = "status.autocrane.io/health"


@pytest.fixture(autouse=True)
def _local_only(cluster: harness.Cluster) -> None:
    if not cluster.local:
        pytest.skip("watchdogs are served on loopback pod IPs only on the local KWOK control plane")


def _pod(cluster: harness.Cluster, namespace: str, name: str) -> Any:
    return cluster.core.read_namespaced_pod(name, namespace)


def _status(pod: Any) -> tuple[str, str]:
    notes, labels = pod.metadata.annotations or {}, pod.metadata.labels or {}
    return notes.get(STATUS, "").split("/")[0], labels.get(HEALTH, "")


def test_a_failing_watchdog_is_recorded_then_the_pod_is_evicted_and_replaced(
    cluster: harness.Cluster, namespace: str
) -> None:
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("web", 4, port))
    pods = ready_pods(cluster, namespace, "web", 4)
    victim = pods[0].metadata.name
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace):
        fleet.failing.add(victim)

        wait_until("every pod recorded: the victim in error, the others info", lambda: all(
            _status(p) == (("error", "error") if p.metadata.name == victim else ("info", "info"))
            for p in live_pods(cluster, namespace, "web")) and len(live_pods(cluster, namespace, "web")) == 4)
        note = (_pod(cluster, namespace, victim).metadata.annotations or {}).get(STATUS, "")
        assert note.endswith("/probe: http 500: watchdog says: broken")

        def replaced() -> bool:
            names = {p.metadata.name for p in live_pods(cluster, namespace, "web")}
            return victim not in names and len(names) == 4

        wait_until("the failing pod evicted and replaced", replaced)
        (event,) = pod_events(cluster, namespace, victim, "Evicted")[:1]
        assert event.type == "Normal" and "watchdogs in error" in event.message
        wait_until("the replacement recorded healthy", lambda: all(
            _status(p) == ("info", "info") for p in live_pods(cluster, namespace, "web")))


def test_a_probe_annotation_pointing_elsewhere_is_refused_with_a_warning_event(
    cluster: harness.Cluster, namespace: str
) -> None:
    port = free_port()
    cluster.apps.create_namespaced_deployment(
        namespace, deployment("sneaky", 1, port, probe=f"169.254.169.254:{port}/latest/meta-data"))
    (pod,) = ready_pods(cluster, namespace, "sneaky", 1)
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace):
        events = wait_until("a ProbeRefused event", lambda: pod_events(
            cluster, namespace, pod.metadata.name, "ProbeRefused"))
        assert events[0].type == "Warning"
        assert "169.254.169.254" in events[0].message and "not the pod's own IP" in events[0].message
        wait_until("a warning status and label", lambda: _status(
            _pod(cluster, namespace, pod.metadata.name)) == ("warning", "warning"))
        assert fleet.hits == {}


def test_a_status_is_cleared_when_its_probe_annotation_is_removed(cluster: harness.Cluster, namespace: str) -> None:
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("web", 1, port))
    (pod,) = ready_pods(cluster, namespace, "web", 1)
    name = pod.metadata.name
    with Fleet(cluster, namespace, port), controller(cluster, namespace):
        wait_until("an info status", lambda: _status(_pod(cluster, namespace, name)) == ("info", "info"))
        shown = subprocess.run([str(Path(sys.executable).parent / "autocrane"), "status", "--kubeconfig",
                                str(cluster.kubeconfig), "-n", namespace], capture_output=True, text=True, check=True)
        assert shown.stdout.splitlines()[1].split()[:4] == [namespace, name, "info", shown.stdout.split()[8]]
        assert shown.stdout.split()[8].startswith("app=info(")
        cluster.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {
            "probe.autocrane.io/app": None}}})
        wait_until("the status cleared and the label unknown", lambda: _status(
            _pod(cluster, namespace, name)) == ("", "unknown"))
