"""Two controller replicas share one Lease: only the leader acts, and a clean shutdown hands over at once."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from tests.cluster import harness
from tests.cluster.controllerkit import Fleet, controller, deployment, free_port, ready_pods
from tests.cluster.harness import wait_until

pytestmark = pytest.mark.cluster


def _holder(cluster: harness.Cluster, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease("autocrane-controller", namespace)
    except client.exceptions.ApiException:
        return None
    return lease.spec.holder_identity


def test_only_the_leader_acts_and_a_stopped_leader_hands_over_without_waiting_for_expiry(
    cluster: harness.Cluster, namespace: str
) -> None:
    if not cluster.local:
        pytest.skip("watchdogs are served on loopback pod IPs only on the local KWOK control plane")
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("web", 2, port))
    ready_pods(cluster, namespace, "web", 2)
    with Fleet(cluster, namespace, port), controller(cluster, namespace, identity="first") as first:
        wait_until("first holds the Lease", lambda: _holder(cluster, namespace) == "first")
        with controller(cluster, namespace, identity="second") as second:
            wait_until("first has done passes", lambda: first.count("pass done") >= 3)
            wait_until("second is running", lambda: second.count("informers synced") == 1)
            assert second.count("pass done") == 0 and second.count("became the leader") == 0

            assert first.stop() == 0
            stopped = time.monotonic()
            assert first.count("lease released") == 1
            wait_until("second holds the Lease", lambda: _holder(cluster, namespace) == "second", timeout=20)
            took = time.monotonic() - stopped
            assert took < 10, f"takeover took {took:.1f}s: the Lease (15 s) was waited out, not released"
            wait_until("second does passes", lambda: second.count("pass done") >= 3)
