"""Data rollouts on the real control plane: stages complete, a watchdog failure rolls back, failover resumes.

Each test runs a real ``autocrane datarepository`` (a directory source on 127.0.0.1) and, per KWOK
pod, a real ``autocrane datadeployer`` sidecar on the pod's loopback IP whose annotations file the
test writes from the pod object, standing in for the kubelet (see ``tests/cluster/datakit.py``).
The controller runs as real processes with ``--data-repository``. Stage order is checked from the
controller's own log lines ("data rollout stage started", "data version requested"), which are
written only after the DataRollout status they describe was stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devcluster import build, downwardapi
from tests.cluster import harness
from tests.cluster.controllerkit import (
    ControllerProcess,
    controller,
    free_port,
    live_pods,
    pod_events,
    ready_pods,
    running,
)
from tests.cluster.datakit import DataFleet, Repository, install_crd
from tests.cluster.harness import wait_until

pytestmark = pytest.mark.cluster

REQUEST = "request.data.autocrane.io/model"
ACK = "status.data.autocrane.io/model"


@pytest.fixture(autouse=True)
def _local_with_crd(cluster: harness.Cluster) -> None:
    if not cluster.local:
        pytest.skip("pods are served on loopback pod IPs only on the local KWOK control plane")
    install_crd(cluster)


def _deployment(name: str, replicas: int, watchdog_port: int) -> dict[str, Any]:
    labels = {"app": name}
    notes = {"data.autocrane.io/model": "models", "probe.autocrane.io/app": f"POD_IP:{watchdog_port}/watchdog"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": notes},
                              "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}},
    }


def _version(value: str | None) -> str | None:
    return None if value is None else json.loads(value).get("version")


def _versions(cluster: harness.Cluster, namespace: str, key: str) -> dict[str, str | None]:
    return {p.metadata.name: _version((p.metadata.annotations or {}).get(key))
            for p in live_pods(cluster, namespace, "web")}


def _all_on(cluster: harness.Cluster, namespace: str, version: str, count: int) -> bool:
    """Every pod asked for ``version`` and its datadeployer acknowledged it."""
    requested, acked = _versions(cluster, namespace, REQUEST), _versions(cluster, namespace, ACK)
    return len(requested) == count and set(requested.values()) == {version} and set(acked.values()) == {version}


def _rollout(cluster: harness.Cluster, namespace: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            "autocrane.io", "v1alpha1", namespace, "datarollouts", "models")
    except client.exceptions.ApiException:
        return {}
    return found


def _status(cluster: harness.Cluster, namespace: str) -> dict[str, Any]:
    return dict(_rollout(cluster, namespace).get("status") or {})


def _create_rollout(cluster: harness.Cluster, namespace: str, **spec: Any) -> None:
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        "autocrane.io", "v1alpha1", namespace, "datarollouts",
        {"apiVersion": "autocrane.io/v1alpha1", "kind": "DataRollout", "metadata": {"name": "models"},
         "spec": {"source": "models", **spec}})


def _flags(repo: Repository, status_port: int, bake: float) -> list[str]:
    return ["--data-repository", repo.url, "--datadeployer-port", str(status_port), "--bake-seconds", str(bake),
            "--progress-deadline", "120"]


def _journal(*procs: ControllerProcess) -> list[dict[str, Any]]:
    """The rollout lines of the controllers' logs, in time order."""
    wanted = ("data rollout stage started", "data version requested", "data rollout rolled back",
              "data rollout succeeded", "data rollout started")
    lines = [dict(line, by=i) for i, proc in enumerate(procs) for line in proc.lines()
             if line.get("message") in wanted]
    return sorted(lines, key=lambda line: str(line.get("time") or line.get("timestamp") or ""))


def _kubectl_wait(cluster: harness.Cluster, namespace: str, condition: str) -> None:
    kubectl = build.bin_dir() / "kubectl"
    if not kubectl.exists():
        return
    done = subprocess.run([str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "wait",
                           f"--for=condition={condition}", "datarollout/models", "--timeout=60s"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr


def test_a_three_stage_rollout_completes_and_advances_the_last_known_good(
    cluster: harness.Cluster, namespace: str
) -> None:
    status_port, watchdog_port = free_port(), free_port()
    cluster.apps.create_namespaced_deployment(namespace, _deployment("web", 4, watchdog_port))
    _create_rollout(cluster, namespace, stages=["1", "50%", "100%"], bakeSeconds=1)
    ready_pods(cluster, namespace, "web", 4)
    with Repository() as repo, DataFleet(cluster, namespace, repo.url, status_port, watchdog_port), \
            controller(cluster, namespace, *_flags(repo, status_port, bake=600)) as proc:
        (v1,) = repo.versions
        wait_until("every pod on v1 (the last known good), acknowledged", lambda: _all_on(cluster, namespace, v1, 4))
        wait_until("the rollout Complete on v1", lambda: _status(cluster, namespace).get("phase") == "Idle")

        v2 = repo.publish("v2")
        wait_until("the rollout progressing", lambda: _status(cluster, namespace).get("target") == v2)
        wait_until("every pod on v2, acknowledged", lambda: _all_on(cluster, namespace, v2, 4), timeout=90)
        wait_until("v2 the last known good", lambda: _status(cluster, namespace).get("lastKnownGood") == v2)
        _kubectl_wait(cluster, namespace, "Complete")
        status = _status(cluster, namespace)
        assert status["phase"] == "Succeeded" and status["acknowledged"] == 4 and not status.get("held")
        assert repo.manifest()["lastKnownGood"] == v2, "the repository was told the new last known good"

        journal = [line for line in _journal(proc) if line.get("version") == v2]
        stages = [line["stage"] for line in journal if line["message"] == "data rollout stage started"]
        assert stages == [0, 1, 2]
        requested_per_stage: list[int] = []
        for line in journal:
            if line["message"] == "data rollout stage started":
                requested_per_stage.append(0)
            elif line["message"] == "data version requested":
                requested_per_stage[-1] += 1
        assert requested_per_stage == [1, 1, 2], "1 pod, then 50 % of 4, then the rest; each pod asked once"

        shown = subprocess.run([str(Path(sys.executable).parent / "autocrane"), "status", "--kubeconfig",
                                str(cluster.kubeconfig), "-n", namespace], capture_output=True, text=True, check=True)
        assert f"model={v2}/{v2}" in shown.stdout and "models: Succeeded" in shown.stdout


def test_a_watchdog_failure_in_stage_one_rolls_back_to_the_last_known_good(
    cluster: harness.Cluster, namespace: str
) -> None:
    status_port, watchdog_port = free_port(), free_port()
    cluster.apps.create_namespaced_deployment(namespace, _deployment("web", 3, watchdog_port))
    ready_pods(cluster, namespace, "web", 3)
    bad: list[str] = []

    def broken(notes: Mapping[str, str]) -> bool:  # the app fails on the new data
        return bool(bad) and _version(notes.get(REQUEST)) == bad[0]

    with Repository() as repo, DataFleet(cluster, namespace, repo.url, status_port, watchdog_port, broken), \
            controller(cluster, namespace, *_flags(repo, status_port, bake=600)) as proc:
        (v1,) = repo.versions
        wait_until("every pod on v1, acknowledged", lambda: _all_on(cluster, namespace, v1, 3))

        bad.append(repo.publish("v2 (bad)"))
        wait_until("the rollout rolled back", lambda: _status(cluster, namespace).get("phase") == "RolledBack")
        _kubectl_wait(cluster, namespace, "RolledBack")
        status = _status(cluster, namespace)
        assert status["held"] == bad and status["lastKnownGood"] == v1 and not status.get("target")
        assert "watchdog 'app'" in status["message"]
        wait_until("every pod back on v1, acknowledged", lambda: _all_on(cluster, namespace, v1, 3))
        assert repo.manifest()["lastKnownGood"] == v1

        asked = [line["pod"] for line in _journal(proc)
                 if line["message"] == "data version requested" and line["version"] == bad[0]]
        assert len(asked) == 1, f"only stage 1 (one pod) may get the bad version, got {asked}"
        (event,) = pod_events(cluster, namespace, asked[0], "DataRolledBack")
        assert event.type == "Warning" and f"pod {asked[0]}" in event.message and "'app'" in event.message

        passes = proc.count("pass done")
        wait_until("ten more passes", lambda: proc.count("pass done") >= passes + 10)
        assert _all_on(cluster, namespace, v1, 3), "a held version is not tried again"
        v3 = repo.publish("v3")
        wait_until("a newer version starts a new rollout", lambda: _status(cluster, namespace).get("target") == v3)


def test_killing_the_leader_mid_rollout_resumes_on_the_other_replica_without_repeating_a_stage(
    cluster: harness.Cluster, namespace: str
) -> None:
    status_port, watchdog_port = free_port(), free_port()
    cluster.apps.create_namespaced_deployment(namespace, _deployment("web", 4, watchdog_port))
    _create_rollout(cluster, namespace, stages=["1", "50%", "100%"], bakeSeconds=3)
    ready_pods(cluster, namespace, "web", 4)
    with Repository() as repo, DataFleet(cluster, namespace, repo.url, status_port, watchdog_port), \
            controller(cluster, namespace, *_flags(repo, status_port, bake=600), identity="first") as first:
        wait_until("first leads", lambda: first.count("became the leader") == 1)
        second = ControllerProcess(cluster, namespace, *_flags(repo, status_port, bake=600), identity="second")
        with running(second):
            _failover(cluster, namespace, repo, first, second)


def _failover(cluster: harness.Cluster, namespace: str, repo: Repository, first: ControllerProcess,
              second: ControllerProcess) -> None:
    (v1,) = repo.versions
    wait_until("every pod on v1, acknowledged", lambda: _all_on(cluster, namespace, v1, 4))
    assert second.count("data version requested") == 0, "the standby never acts"

    v2 = repo.publish("v2")
    wait_until("stage 2 of 3 running", lambda: _status(cluster, namespace).get("stage") == 2)
    # the log lines follow the writes they describe: wait for them, or the kill could land in between
    wait_until("first logged stage 2 and its two pods", lambda: first.count(
        "data version requested", lambda line: line.get("version") == v2) == 2 and first.count(
        "data rollout stage started", lambda line: line.get("stage") == 1) == 1)
    assert first.process is not None
    first.process.kill()  # no clean shutdown: the Lease must expire
    first.process.wait(10)
    at_kill = _status(cluster, namespace)
    assert at_kill["target"] == v2 and at_kill["stage"] == 2

    wait_until("second leads", lambda: second.count("became the leader") == 1, timeout=45)
    wait_until("every pod on v2, acknowledged", lambda: _all_on(cluster, namespace, v2, 4), timeout=90)
    wait_until("v2 the last known good", lambda: _status(cluster, namespace).get("lastKnownGood") == v2)

    def stages(proc: ControllerProcess) -> list[int]:
        return [line["stage"] for line in _journal(proc)
                if line["message"] == "data rollout stage started" and line["version"] == v2]

    assert stages(first)[:2] == [0, 1] and 0 not in stages(second) and 1 not in stages(second)
    assert stages(first) + stages(second) == [0, 1, 2], "each stage started exactly once across the replicas"
    asked = [line["pod"] for line in _journal(first, second) if line["message"] == "data version requested"
             and line["version"] == v2]
    assert sorted(asked) == sorted({p.metadata.name for p in live_pods(cluster, namespace, "web")})
    assert not [line for line in second.lines() if line.get("message") == "data version requested"
                and line.get("version") == v1], "no pod went back to v1 on the new leader"


def _cli(cluster: harness.Cluster, namespace: str, *args: str) -> str:
    done = subprocess.run([str(Path(sys.executable).parent / "autocrane"), "rollout", *args, "--kubeconfig",
                           str(cluster.kubeconfig), "-n", namespace], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promote_abort_and_pin_from_the_command_line(cluster: harness.Cluster, namespace: str) -> None:
    status_port, watchdog_port = free_port(), free_port()
    cluster.apps.create_namespaced_deployment(namespace, _deployment("web", 3, watchdog_port))
    ready_pods(cluster, namespace, "web", 3)
    with Repository() as repo, DataFleet(cluster, namespace, repo.url, status_port, watchdog_port), \
            controller(cluster, namespace, *_flags(repo, status_port, bake=600)):
        (v1,) = repo.versions
        wait_until("every pod on v1, acknowledged", lambda: _all_on(cluster, namespace, v1, 3))
        v2 = repo.publish("v2")
        wait_until("stage 1 baking (600 s)", lambda: "baking" in _status(cluster, namespace).get("message", ""))

        assert "promoted" in _cli(cluster, namespace, "promote", "models")
        wait_until("stage 2 after promote", lambda: _status(cluster, namespace).get("stage") == 2)
        assert "aborted" in _cli(cluster, namespace, "abort", "models")
        wait_until("rolled back after abort", lambda: _status(cluster, namespace).get("phase") == "RolledBack")
        assert _status(cluster, namespace)["held"] == [v2]
        wait_until("every pod back on v1", lambda: _all_on(cluster, namespace, v1, 3))

        _cli(cluster, namespace, "pin", "models", v2)
        wait_until("every pod pinned to v2", lambda: _all_on(cluster, namespace, v2, 3))
        assert _status(cluster, namespace)["phase"] == "Pinned"
        assert "Pinned" in _cli(cluster, namespace, "list")
        _cli(cluster, namespace, "pin", "models", "--clear")
        wait_until("back on the last known good once unpinned", lambda: _all_on(cluster, namespace, v1, 3))
        assert repo.manifest()["lastKnownGood"] == v1, "a pin never moves the last known good"


def test_two_namespaces_sharing_a_source_keep_their_own_last_known_good(
    cluster: harness.Cluster, namespace: str, tmp_path: Path
) -> None:
    """One namespace rolls v2 back, the other completes it: each writes its own last known good once,
    and never the other's, pass after pass; a new pod of each falls back to its own."""
    other = f"{namespace[:55]}-b"
    cluster.create_namespace(other)
    try:
        status_port, watchdog_port = free_port(), free_port()
        for ns in (namespace, other):
            cluster.apps.create_namespaced_deployment(ns, _deployment("web", 2, watchdog_port))
            ready_pods(cluster, ns, "web", 2)
        _create_rollout(cluster, other, stages=["1", "100%"], bakeSeconds=1)
        bad: list[str] = []

        def broken(notes: Mapping[str, str]) -> bool:
            return bool(bad) and _version(notes.get(REQUEST)) == bad[0]

        with Repository() as repo, DataFleet(cluster, namespace, repo.url, status_port, watchdog_port, broken), \
                DataFleet(cluster, other, repo.url, status_port, watchdog_port), \
                controller(cluster, namespace, "--namespace", other, *_flags(repo, status_port, bake=600)) as proc:
            (v1,) = repo.versions
            for ns in (namespace, other):
                wait_until(f"{ns}: every pod on v1", lambda ns=ns: _all_on(cluster, ns, v1, 2))
            bad.append(v2 := repo.publish("v2"))
            wait_until("rolled back here", lambda: _status(cluster, namespace).get("phase") == "RolledBack")
            wait_until("completed there", lambda: _status(cluster, other).get("lastKnownGood") == v2, timeout=90)
            wait_until("each namespace's last known good in the repository", lambda: repo.manifest().get(
                "lastKnownGoodByNamespace") == {namespace: v1, other: v2})
            assert repo.manifest()["lastKnownGood"] == v2, "the source's is the newest a rollout completed"
            writes = proc.count("last known good set in the repository")
            passes = proc.count("pass done")
            wait_until("ten more passes", lambda: proc.count("pass done") >= passes + 10)
            assert proc.count("last known good set in the repository") == writes == 2, \
                "each namespace wrote its own once; nobody overwrites the other's every pass"

            for ns, expected in ((namespace, v1), (other, v2)):
                notes, root = tmp_path / f"{ns}.annotations", tmp_path / ns
                notes.write_text(downwardapi.format_annotations({"data.autocrane.io/model": "models"}))
                root.mkdir()
                done = subprocess.run(
                    [str(Path(sys.executable).parent / "autocrane"), "datadeployer", "--mode", "init",
                     "--repository", repo.url, "--root", str(root), "--annotations-file", str(notes),
                     "--request-timeout", "0", "--namespace", ns, "--log-format", "text"],
                    capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stdout + done.stderr
                assert f"last known good version {expected}" in done.stdout + done.stderr, ns
    finally:
        cluster.delete_namespace(other)
