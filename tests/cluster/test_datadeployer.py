"""The data plane's in-pod programs against a pod object on the real control plane.

The test stands in for the kubelet (:class:`tests.cluster.podkit.Kubelet`): it writes the pod's
downward-API annotations file from the pod as the API server has it, and rewrites it when the
pod changes, where the kubelet's sync loop would. Everything else is real: an ``autocrane
datarepository`` process serving a directory source, ``autocrane datadeployer --mode init``
then ``--mode sidecar`` with its status endpoint on the pod's IP (where the controller reads
the acknowledgement), requests written on the pod through the API as the controller writes them,
``autocrane watchdog`` writing statuses through the API, and ``autocrane watchdoghealthz``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from autocrane import keys
from tests.cluster import harness, podkit
from tests.cluster.harness import wait_until
from tests.cluster.podkit import DATA_SET, DECLARE, REQUEST_KEY, answers, http_get, request_value
from tests.sidecars import hostile

pytestmark = pytest.mark.cluster

FAILURE_THRESHOLD = 3.0
"""Seconds of failed syncing before the datadeployer's /watchdog says error."""


def create_pod(cluster: harness.Cluster, namespace: str, name: str, pod_annotations: dict[str, str]) -> Any:
    """A plain pod (no injection); KWOK schedules it and gives it an IP on loopback. Returns it Running.

    It also carries an annotation needing every kind of Go escape, which the programs must parse."""
    cluster.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"example.com/tricky": podkit.TRICKY, **pod_annotations}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}})

    def running() -> Any:
        pod = cluster.core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == "Running" and pod.status.pod_ip else None

    return wait_until(f"pod {name} Running with an IP", running)


def patch_request(cluster: harness.Cluster, namespace: str, pod: str, value: str) -> None:
    """What the controller does to ask for a version: one annotation, through the API."""
    cluster.core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {REQUEST_KEY: value}}})


@dataclass
class DataPod:
    """A pod with a data set, its kubelet stand-in, and its datadeployer sidecar on the pod's IP."""

    name: str
    ip: str
    kubelet: podkit.Kubelet
    root: Path
    sidecar: podkit.Process
    status_url: str

    def status(self) -> dict[str, Any]:
        response = http_get(f"{self.status_url}/status")
        assert response is not None and response.status_code == 200
        entry: dict[str, Any] = response.json()["sets"][DATA_SET]
        return entry

    def live_text(self) -> str:
        return (self.root / DATA_SET / "hello.txt").read_text()

    def acknowledged(self, version: dict[str, Any]) -> dict[str, Any] | None:
        self.sidecar.alive()
        entry = self.status()
        return entry if entry["version"] == version["version"] and entry["error"] is None else None


def start_data_pod(cluster: harness.Cluster, namespace: str, tmp_path: Path, processes: podkit.Processes,
                   repo: podkit.Repository, first: dict[str, Any]) -> DataPod:
    """Create the pod asking for ``first`` (a request written at admission), run init, then the sidecar."""
    name = "data"
    pod = create_pod(cluster, namespace, name, {**DECLARE, REQUEST_KEY: request_value(first)})
    kubelet = podkit.Kubelet(cluster, namespace, name, tmp_path / "podinfo")
    kubelet.sync()
    root = tmp_path / "data"
    root.mkdir()
    common = ["--repository", repo.url, "--root", str(root), "--annotations-file", str(kubelet.annotations_file),
              "--poll-seconds", "0.1"]
    code, output = processes.run("datadeployer-init", "datadeployer", "--mode", "init", *common,
                                 "--request-timeout", "30", "--max-failures", "2", timeout=60)
    assert code == 0, output
    assert "every data set is present and verified" in output
    assert (root / DATA_SET / "hello.txt").read_text() == "hello v1"

    port = podkit.free_port()
    sidecar = processes.start("datadeployer-sidecar", "datadeployer", "--mode", "sidecar", *common,
                              "--host", pod.status.pod_ip, "--port", str(port),
                              "--failure-threshold", str(FAILURE_THRESHOLD))
    data_pod = DataPod(name, pod.status.pod_ip, kubelet, root, sidecar, f"http://{pod.status.pod_ip}:{port}")
    wait_until("the sidecar's /synced on the pod's IP", lambda: answers(f"{data_pod.status_url}/synced", 200, sidecar))
    assert http_get(f"{data_pod.status_url}/status").json()["annotationsError"] is None
    entry = data_pod.status()
    assert (entry["version"], entry["sha256"], entry["requested"]) == (first["version"], first["sha256"],
                                                                       first["version"])
    return data_pod


def deployed_at(entry: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(entry["deployedAt"])


def test_a_requested_version_is_swapped_in_and_acknowledged(
    cluster: harness.Cluster, namespace: str, tmp_path: Path, processes: podkit.Processes, repository: podkit.Repository
) -> None:
    v1 = repository.publish("hello v1")
    pod = start_data_pod(cluster, namespace, tmp_path, processes, repository, v1)
    v2 = repository.publish("hello v2")

    requested_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    patch_request(cluster, namespace, pod.name, request_value(v2))
    # Until the kubelet refreshes the volume, the sidecar knows nothing of the request.
    assert pod.status()["version"] == v1["version"] and pod.live_text() == "hello v1"
    assert json.loads(pod.kubelet.sync()[REQUEST_KEY])["version"] == v2["version"]

    entry = wait_until("v2 acknowledged on the pod's status endpoint", lambda: pod.acknowledged(v2))
    assert entry["sha256"] == v2["sha256"] and entry["requested"] == v2["version"]
    assert entry["fallback"] is False and entry["failingSince"] is None
    assert requested_at <= deployed_at(entry) <= dt.datetime.now(dt.UTC)
    assert pod.live_text() == "hello v2"
    assert (pod.root / DATA_SET).is_symlink()
    assert answers(f"{pod.status_url}/synced", 200) and answers(f"{pod.status_url}/watchdog", 200).text == "info: ok"

    # Rollback: the previous tree is kept on disk, so it goes live again without a download.
    patch_request(cluster, namespace, pod.name, request_value(v1))
    pod.kubelet.sync()
    entry = wait_until("v1 acknowledged again", lambda: pod.acknowledged(v1))
    assert pod.live_text() == "hello v1"
    assert deployed_at(entry) >= requested_at
    assert "already on disk, publishing without download" in pod.sidecar.output()


def _failed_on(pod: DataPod, version: dict[str, Any]) -> dict[str, Any] | None:
    """The status once it reports an error about ``version`` (errors name the version they are about;
    until the new attempt ends, the previous attempt's error is still shown)."""
    pod.sidecar.alive()
    entry = pod.status()
    failed = entry["requested"] == version["version"] and version["version"] in (entry["error"] or "")
    return entry if failed else None


def _escaped(root: Path) -> list[Path]:
    return list(root.parent.rglob("escaped.txt"))


def test_a_hostile_or_corrupt_version_leaves_the_live_data_untouched_and_is_reported(
    cluster: harness.Cluster, namespace: str, tmp_path: Path, processes: podkit.Processes, repository: podkit.Repository
) -> None:
    v1 = repository.publish("hello v1")
    pod = start_data_pod(cluster, namespace, tmp_path, processes, repository, v1)
    live = pod.status()
    v2 = repository.publish("hello v2")

    def ask(value: str) -> None:
        patch_request(cluster, namespace, pod.name, value)
        pod.kubelet.sync()

    def still_v1(entry: dict[str, Any]) -> None:
        assert (entry["version"], entry["sha256"], entry["deployedAt"]) == (
            live["version"], live["sha256"], live["deployedAt"])
        assert pod.live_text() == "hello v1"
        assert (pod.root / DATA_SET).resolve().parent == pod.root / ".versions" / DATA_SET
        assert not _escaped(pod.root)

    # 1. A request whose sha256 disagrees with the repository's manifest.
    ask(request_value(v2, sha256="0" * 64))
    entry = wait_until("the sha256 mismatch reported", lambda: _failed_on(pod, v2))
    assert "differs from the manifest's" in entry["error"]
    still_v1(entry)
    warning = answers(f"{pod.status_url}/watchdog", 200)
    assert warning is not None and warning.text.startswith("warning: ") and DATA_SET in warning.text
    assert answers(f"{pod.status_url}/synced", 503) is not None
    error = wait_until(f"/watchdog in error after {FAILURE_THRESHOLD:g}s of failing",
                       lambda: answers(f"{pod.status_url}/watchdog", 500, pod.sidecar))
    assert error.text.startswith("error: ") and "differs from the manifest's" in error.text

    # 2. The repository serves a truncated archive (corrupted on its disk).
    v3 = repository.publish("hello v3, the one whose archive gets truncated")
    archive = repository.archive(v3)
    archive.write_bytes(archive.read_bytes()[: v3["size"] // 2])
    ask(request_value(v3))
    entry = wait_until("the truncated archive reported", lambda: _failed_on(pod, v3), timeout=60)
    assert "archive shorter than the manifest's" in entry["error"]
    still_v1(entry)
    assert not any(p.name.startswith(v3["version"]) for p in (pod.root / ".versions" / DATA_SET).iterdir())
    assert answers(f"{pod.status_url}/watchdog", 500) is not None

    # 3. The repository's archive was replaced by a hostile one of the same size (tar slip first):
    #    refused while streaming, or at the latest by the sha256 check at the end; never published.
    v4 = repository.publish("hello v4, the one whose archive gets replaced\n" + secrets.token_hex(4096))
    slip = hostile.tar_gz(hostile.file("../escaped.txt", b"pwned"), hostile.file("hello.txt", b"owned"))
    assert len(slip) < v4["size"]
    repository.archive(v4).write_bytes(slip + bytes(v4["size"] - len(slip)))
    ask(request_value(v4))
    entry = wait_until("the hostile archive reported", lambda: _failed_on(pod, v4), timeout=60)
    assert re.search(r"refused archive: .*escaped\.txt|sha256 mismatch", entry["error"]), entry["error"]
    still_v1(entry)
    assert not any(p.name.startswith(v4["version"]) for p in (pod.root / ".versions" / DATA_SET).iterdir())
    assert not list((pod.root / ".downloads").glob("*.part"))

    # A good request clears the error and the watchdog.
    ask(request_value(v2))
    entry = wait_until("v2 acknowledged after the failures", lambda: pod.acknowledged(v2))
    assert entry["failingSince"] is None and pod.live_text() == "hello v2"
    assert answers(f"{pod.status_url}/watchdog", 200).text == "info: ok"
    assert answers(f"{pod.status_url}/synced", 200) is not None


def _watchdog(processes: podkit.Processes, cluster: harness.Cluster, namespace: str, pod: str,
              *args: str) -> tuple[int, str]:
    return processes.run(f"watchdog-{args[0]}-{len(processes.started)}",
                         command=[*podkit.AUTOCRANE, "watchdog", "--pod", pod, "--namespace", namespace,
                                  "--kubeconfig", str(cluster.kubeconfig), *args], timeout=60)


def test_watchdoghealthz_follows_statuses_posted_through_the_api(
    cluster: harness.Cluster, namespace: str, tmp_path: Path, processes: podkit.Processes
) -> None:
    min_ready = 3
    pod = create_pod(cluster, namespace, "app", {keys.MIN_READY_SECONDS: str(min_ready)})
    kubelet = podkit.Kubelet(cluster, namespace, "app", tmp_path / "podinfo")
    kubelet.sync()
    port = podkit.free_port()
    healthz = processes.start("watchdoghealthz", "watchdoghealthz", "--annotations-file",
                              str(kubelet.annotations_file), "--host", pod.status.pod_ip, "--port", str(port),
                              "--poll-seconds", "0.1")
    url = f"http://{pod.status.pod_ip}:{port}/healthz"
    wait_until("watchdoghealthz ready", lambda: answers(url, 200, healthz), timeout=30)

    code, output = _watchdog(processes, cluster, namespace, "app", "post", "app", "error", "disk on fire")
    assert code == 0, output
    written = cluster.core.read_namespaced_pod("app", namespace)
    assert re.fullmatch(r"error/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/disk on fire",
                        written.metadata.annotations["status.autocrane.io/app"])
    assert written.metadata.labels[keys.HEALTH_LABEL] == "error"
    # No API call from watchdoghealthz: it learns of the error only when the volume is refreshed.
    assert answers(url, 200) is not None
    kubelet.sync()
    unready = wait_until("watchdoghealthz unready", lambda: answers(url, 503, healthz))
    assert "disk on fire" in unready.text

    for args in ((), ("--annotations-file", str(kubelet.annotations_file))):
        code, output = _watchdog(processes, cluster, namespace, "app", "get", *args)
        assert code == 0, output
        assert re.search(r"^app error \S+ disk on fire$", output, re.MULTILINE), output

    # An unknown level is refused before any API call: the pod is not touched.
    code, output = _watchdog(processes, cluster, namespace, "app", "post", "app", "fatal", "nope")
    assert code == 1 and "unknown level 'fatal'" in output
    unchanged = cluster.core.read_namespaced_pod("app", namespace)
    assert unchanged.metadata.resource_version == written.metadata.resource_version

    code, output = _watchdog(processes, cluster, namespace, "app", "post", "app", "info", "recovered")
    assert code == 0, output
    assert cluster.core.read_namespaced_pod("app", namespace).metadata.labels[keys.HEALTH_LABEL] == "info"
    cleared = time.monotonic()
    kubelet.sync()
    waiting = wait_until("watchdoghealthz waiting out min-ready-seconds",
                         lambda: (r := answers(url, 503, healthz)) and r.text.startswith("waiting") and r)
    assert f"of {min_ready}s" in waiting.text
    wait_until("watchdoghealthz ready again", lambda: answers(url, 200, healthz), timeout=30)
    assert time.monotonic() - cleared >= min_ready
    code, output = _watchdog(processes, cluster, namespace, "app", "get", "--annotations-file",
                             str(kubelet.annotations_file))
    assert re.search(r"^app info \S+ recovered$", output, re.MULTILINE), output

    # A moment when the file cannot be read makes it unready; the same content readable again
    # makes it ready again (it used to stick: the watcher skipped unchanged content, error and all).
    kubelet.lose_volume()
    lost = wait_until("watchdoghealthz unready without its file", lambda: answers(url, 503, healthz))
    assert "cannot be read" in lost.text
    kubelet.sync()
    wait_until("watchdoghealthz ready again with the same file back", lambda: answers(url, 200, healthz), timeout=30)


def test_init_without_a_request_falls_back_to_the_last_known_good_the_controller_set(
    cluster: harness.Cluster, namespace: str, tmp_path: Path, processes: podkit.Processes, repository: podkit.Repository
) -> None:
    repository.publish("hello v1")
    v2 = repository.publish("hello v2")
    # What the controller does when a rollout completes: the repository learns the new last known good.
    moved = httpx.put(f"{repository.url}/v1/sources/{podkit.SOURCE}/last-known-good",
                      json={"version": v2["version"]}, timeout=5, trust_env=False)
    assert moved.status_code == 200 and moved.json()["lastKnownGood"] == v2["version"]
    create_pod(cluster, namespace, "late", DECLARE)  # no request yet: the controller has not seen the pod
    kubelet = podkit.Kubelet(cluster, namespace, "late", tmp_path / "podinfo")
    kubelet.sync()
    root = tmp_path / "data"
    root.mkdir()
    code, output = processes.run("datadeployer-init", "datadeployer", "--mode", "init", "--repository",
                                 repository.url, "--root", str(root), "--annotations-file",
                                 str(kubelet.annotations_file), "--request-timeout", "1", "--poll-seconds", "0.1")
    assert code == 0, output
    assert f"falling back to the repository's last known good version {v2['version']}" in output
    assert (root / DATA_SET / "hello.txt").read_text() == "hello v2"
