"""watchdoghealthz decisions, the watchdog post patch, and the test workload."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import httpx

from autocrane import clock, podinfo, watchdogs
from devcluster import downwardapi
from sidecars import testworkload, watchdog, watchdoghealthz
from sidecars.watchdoghealthz import Health, decide, observe
from tests.sidecars.servers import serve_asgi

OK = {"status.autocrane.io/a": "info/2026-01-02T03:04:05Z/fine"}
WARN = {"status.autocrane.io/a": "warning/2026-01-02T03:04:05Z/slow"}
ERR = {"status.autocrane.io/a": "error/2026-01-02T03:04:05Z/broken", "status.autocrane.io/b": OK[
    "status.autocrane.io/a"]}


def test_healthz_is_unready_before_any_observation() -> None:
    assert decide(Health(), 100, 20) == (False, "error: no observation yet")


def test_healthz_needs_min_ready_seconds_without_error() -> None:
    health = observe(Health(), OK, now=100)
    assert decide(health, 100, 20)[0] is False
    assert decide(health, 119.9, 20)[0] is False
    assert decide(observe(health, OK, now=120), 120, 20)[0] is True  # the first clean time is kept
    assert decide(health, 100 + 10 * 365 * 86400, 20)[0] is True


def test_zero_min_ready_seconds_is_ready_on_the_first_clean_observation() -> None:
    assert decide(observe(Health(), {}, now=5), 5, 0) == (True, "ok: no error watchdog for 0s")


def test_an_error_makes_it_unready_and_restarts_the_clock() -> None:
    health = observe(Health(), OK, now=0)
    health = observe(health, ERR, now=50)
    ready, reason = decide(health, 50, 20)
    assert not ready and "a: broken" in reason
    health = observe(health, OK, now=60)
    assert decide(health, 79, 20)[0] is False and decide(health, 80, 20)[0] is True


def test_warnings_never_make_it_unready_but_unreadable_statuses_do() -> None:
    assert decide(observe(Health(), WARN, now=0), 0, 0)[0] is True
    bad = observe(Health(), {"status.autocrane.io/a": "fatal/x/y"}, now=0)
    assert decide(bad, 0, 0)[0] is False and "unknown level" in decide(bad, 0, 0)[1]


def test_an_unreadable_annotations_file_is_unready() -> None:
    assert decide(observe(observe(Health(), OK, 0), None, 10), 100, 0)[0] is False


def test_the_endpoint_follows_the_file_and_the_annotation(tmp_path: Path) -> None:
    path = tmp_path / "annotations"
    path.write_text(downwardapi.format_annotations(OK | {"watchdoghealthz.autocrane.io/min-ready-seconds": "30"}))
    manual = clock.ManualClock()
    monitor = watchdoghealthz.Monitor(podinfo.Watcher(path), None, time=manual)
    with serve_asgi(watchdoghealthz.app(monitor)) as base, httpx.Client(base_url=base) as client:
        _check_healthz(client, path, manual)


def _check_healthz(client: httpx.Client, path: Path, manual: clock.ManualClock) -> None:
    assert client.get("/healthz").status_code == 503
    manual.advance(30)
    assert client.get("/healthz").status_code == 200
    path.write_text(downwardapi.format_annotations(ERR))
    answer = client.get("/healthz")
    assert answer.status_code == 503 and "broken" in answer.text


T = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_post_patches_only_its_key_and_the_recomputed_health_label() -> None:
    pod = {"metadata": {"resourceVersion": "42", "labels": {"app": "x"},
                        "annotations": {"status.autocrane.io/other": "warning/2026-01-01T00:00:00Z/meh", "x": "y"}}}
    patch = watchdog.build_patch(pod, "db", watchdogs.Status(watchdogs.Level.INFO, T, "ok / fine"))
    assert patch == {"metadata": {
        "annotations": {"status.autocrane.io/db": "info/2026-01-02T03:04:05Z/ok / fine"},
        "labels": {"status.autocrane.io/health": "warning"},
        "resourceVersion": "42",
    }}
    worse = watchdog.build_patch(pod, "other", watchdogs.Status(watchdogs.Level.ERROR, T, "down"))
    assert worse["metadata"]["labels"] == {"status.autocrane.io/health": "error"}


def test_post_refuses_an_unknown_level_before_any_api_call() -> None:
    done = subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", "watchdog", "--pod", "p",
                           "--kubeconfig", "/nonexistent", "post", "db", "fatal", "msg"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "unknown level 'fatal'" in done.stderr


def test_get_reads_the_downward_api_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_text(downwardapi.format_annotations(ERR))
    done = subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", "watchdog", "get",
                           "--annotations-file", str(tmp_path / "a")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["a error 2026-01-02T03:04:05Z broken", "b info 2026-01-02T03:04:05Z fine"]


def test_the_test_workload_fails_recovers_and_reports_its_data_version(tmp_path: Path) -> None:
    (tmp_path / ".versions/models").mkdir(parents=True)
    (tmp_path / ".versions/models/20260102T030405Z-abc-1a2b3c4d").mkdir()
    (tmp_path / "models").symlink_to(".versions/models/20260102T030405Z-abc-1a2b3c4d")
    with serve_asgi(testworkload.app([tmp_path / "models", tmp_path / "missing"])) as base, \
            httpx.Client(base_url=base) as client:
        _check_workload(client, tmp_path)


def _check_workload(client: httpx.Client, tmp_path: Path) -> None:
    assert client.get("/watchdog").status_code == 200
    client.post("/fail")
    assert client.get("/watchdog").status_code == 500
    client.post("/recover")
    assert client.get("/watchdog").status_code == 200
    assert client.post("/notify", json={"name": "models", "version": "v"}).status_code == 200
    assert client.get("/data").json() == {
        "versions": {str(tmp_path / "models"): "20260102T030405Z-abc", str(tmp_path / "missing"): None},
        "notified": {"name": "models", "version": "v"}}
