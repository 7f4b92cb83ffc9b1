"""Hostile pods on the real control plane (issue 8): beside a pod whose statuses cannot exist in UTC, a
failing pod is still evicted; beside a pod whose datadeployer answers hostile ``/status`` bodies, a
data rollout still completes. Both ran into every pass failing before (no eviction, no rollout step
for as long as the hostile pod existed)."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.cluster import harness
from tests.cluster.controllerkit import Fleet, controller, deployment, free_port, live_pods, ready_pods
from tests.cluster.datakit import DataFleet, Repository, install_crd
from tests.cluster.harness import wait_until
from tests.cluster.test_controller_rollouts import _all_on, _create_rollout, _deployment, _flags, _status
from tests.hostile import values

pytestmark = pytest.mark.cluster

HOSTILE_NOTES = {
    "status.autocrane.io/late": f"error/{values.LATE}/m",
    "status.autocrane.io/early": f"error/{values.EARLY}/m",
    "request.data.autocrane.io/scratch": values.DEEP,
    "status.data.autocrane.io/scratch": values.DEEP,
    "probe.autocrane.io/metadata": "169.254.169.254:80/latest/meta-data",
    "store.autocrane.io/deps": ",,,models\n,",
    "watchdoghealthz.autocrane.io/min-ready-seconds": "9" * 5000,
}
"""Annotations of the hostile pod: each one broke a controller pass or a sidecar once."""


@pytest.fixture(autouse=True)
def _local_only(cluster: harness.Cluster) -> None:
    if not cluster.local:
        pytest.skip("pods are served on loopback pod IPs only on the local KWOK control plane")


def _hostile(name: str, notes: dict[str, str], port: int) -> dict[str, Any]:
    found = deployment(name, 1, port)
    found["spec"]["template"]["metadata"]["annotations"].update(notes)
    return found


def test_a_pod_with_statuses_out_of_range_in_utc_does_not_stop_another_pods_eviction(
    cluster: harness.Cluster, namespace: str
) -> None:
    port = free_port()
    cluster.apps.create_namespaced_deployment(namespace, _hostile("hostile", HOSTILE_NOTES, port))
    cluster.apps.create_namespaced_deployment(namespace, deployment("web", 3, port))
    (hostile,) = ready_pods(cluster, namespace, "hostile", 1)
    victim = ready_pods(cluster, namespace, "web", 3)[0].metadata.name
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace) as proc:
        fleet.failing.add(victim)
        wait_until("the failing pod evicted and replaced", lambda: victim not in {p.metadata.name for p in live_pods(
            cluster, namespace, "web")} and len(live_pods(cluster, namespace, "web")) == 3)
        pod = cluster.core.read_namespaced_pod(hostile.metadata.name, namespace)
        assert pod.metadata.labels["status.autocrane.io/health"] == "error", "unreadable statuses count as error"
        assert pod.metadata.annotations["status.autocrane.io/metadata"].startswith("warning/"), "a refused probe"
        assert proc.count("pass failed") == 0
        assert proc.count("pass done", lambda line: line.get("faults")) == 0, "the decoders handled every value"


class _HostileStatus(http.server.BaseHTTPRequestHandler):
    bodies: Iterator[bytes]
    answered: list[int]

    def do_GET(self) -> None:
        body = next(self.bodies)
        self.answered.append(len(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


# Every body that once aborted a pass, as a datadeployer's /status answer.
_HOSTILE_SETS: list[Any] = [
    {"scratch": {"version": "v1", "deployedAt": values.LATE}},
    {"scratch": {"version": "v1", "deployedAt": "9999-01-01T00:00:00Z"}},
    {"scratch": {"version": "v" * 100_000, "error": "e" * 100_000}},
    {"scratch": {"version": "v1\n", "deployedAt": values.EARLY}},
]
HOSTILE_BODIES = [values.BRACKETS_5000.encode(), values.DEEP.encode(), b"\xff\xfe{",
                  *(json.dumps({"sets": s}).encode() for s in _HOSTILE_SETS)]


@contextmanager
def _hostile_status(ip: str, port: int) -> Iterator[list[int]]:
    """A datadeployer ``/status`` on ``ip:port`` answering, in turn, every body that once aborted a pass."""
    answered: list[int] = []
    handler = type("Status", (_HostileStatus,), {"bodies": itertools.cycle(HOSTILE_BODIES), "answered": answered})
    server = http.server.ThreadingHTTPServer((ip, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield answered
    finally:
        server.shutdown()
        server.server_close()


def test_a_data_rollout_completes_beside_a_pod_whose_status_answers_are_hostile(
    cluster: harness.Cluster, namespace: str
) -> None:
    install_crd(cluster)
    status_port, watchdog_port = free_port(), free_port()
    # deps on models would make it a dependent of the rollout, whose unreadable statuses roll it back
    hostile_notes = {**HOSTILE_NOTES, "data.autocrane.io/scratch": "scratch",
                     "store.autocrane.io/deps": ",,,scratch\n,"}
    cluster.apps.create_namespaced_deployment(namespace, _hostile("hostile", hostile_notes, watchdog_port))
    cluster.apps.create_namespaced_deployment(namespace, _deployment("web", 2, watchdog_port))
    _create_rollout(cluster, namespace, stages=["100%"], bakeSeconds=1)
    (hostile,) = ready_pods(cluster, namespace, "hostile", 1)
    ready_pods(cluster, namespace, "web", 2)

    def plays(name: str) -> bool:
        return name != hostile.metadata.name

    with Repository() as repo, _hostile_status(hostile.status.pod_ip, status_port) as answered, \
            DataFleet(cluster, namespace, repo.url, status_port, watchdog_port, plays=plays), \
            controller(cluster, namespace, *_flags(repo, status_port, bake=600)) as proc:
        (v1,) = repo.versions
        wait_until("every web pod on v1, acknowledged", lambda: _all_on(cluster, namespace, v1, 2), timeout=90)
        v2 = repo.publish("v2")
        wait_until("every web pod on v2, acknowledged", lambda: _all_on(cluster, namespace, v2, 2), timeout=90)
        wait_until("v2 the last known good", lambda: _status(cluster, namespace).get("lastKnownGood") == v2)
        assert _status(cluster, namespace)["phase"] == "Succeeded"
        # A quick rollout may finish before the controller has read every body; the later passes read the rest.
        wait_until("every hostile body answered at least once", lambda: len(answered) >= len(HOSTILE_BODIES))
        assert _status(cluster, namespace)["phase"] == "Succeeded"
        assert proc.count("pass failed") == 0

        def mirrored() -> str:
            notes = cluster.core.read_namespaced_pod(hostile.metadata.name, namespace).metadata.annotations
            return str(notes.get("status.data.autocrane.io/scratch"))

        wait_until("the one usable acknowledgement mirrored, without its impossible time",
                   lambda: mirrored() == '{"version":"v1","deployedAt":null}')
