"""The datadeployer's init and sidecar modes, its status endpoints and its after-swap hook."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from autocrane import clock, errors, manifests, podinfo
from devcluster import downwardapi
from sidecars.datadeploy import hooks, main, requests, status, swap
from tests import waiting
from tests.sidecars.servers import FakeRepository, serve_asgi
from tests.sidecars.test_datadeploy_sync import settings, tree_archive
from webhook import options


def write_annotations(path: Path, sets: dict[str, str], requests: dict[str, manifests.DataRequest]) -> None:
    values = {f"data.autocrane.io/{name}": source for name, source in sets.items()}
    values |= {f"request.data.autocrane.io/{name}": r.to_annotation() for name, r in requests.items()}
    path.write_text(downwardapi.format_annotations(values | {"kubernetes.io/config.seen": "x"}))


def deployer(tmp_path: Path, url: str, timeout: float = 60.0, time: clock.Clock = clock.SYSTEM,
             notifier: hooks.Notifier | None = None) -> main.Deployer:
    return main.Deployer(settings(tmp_path / "root", url), podinfo.Watcher(tmp_path / "annotations"),
                         status.Status(failure_threshold=60, time=time), timeout, notifier)


def test_init_deploys_every_requested_set_and_exits_0(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    a, b = repo.add("src-a", "v1", tree_archive("a1")), repo.add("src-b", "v7", tree_archive("b7"))
    write_annotations(tmp_path / "annotations", {"a": "src-a", "b": "src-b"}, {"a": a, "b": b})
    d = deployer(tmp_path, url)
    assert asyncio.run(main.run_init(d, max_failures=3, poll=0)) == 0
    assert (tmp_path / "root/a/d/f0").read_bytes().startswith(b"a1") and (tmp_path / "root/b/d/f0").exists()
    assert d.status.synced() == (True, [])


def test_init_falls_back_to_last_known_good_without_a_request(tmp_path: Path, repo: FakeRepository, url: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    repo.add("src", "v1", tree_archive("v1"), lkg=True)
    repo.add("src", "v2", tree_archive("v2"))
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {})
    d = deployer(tmp_path, url, timeout=0)
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(main.run_init(d, max_failures=3, poll=0)) == 0
    assert swap.Store(tmp_path / "root").current("ds").version == "v1"  # type: ignore[union-attr]
    assert d.status.get("ds").fallback and "falling back to the repository's last known good" in caplog.text


def test_init_falls_back_to_its_own_namespaces_last_known_good_else_the_sources(
        tmp_path: Path, repo: FakeRepository, url: str) -> None:
    repo.add("src", "v1", tree_archive("v1"))
    repo.add("src", "v2", tree_archive("v2"), lkg=True)
    repo.sources["src"]["lastKnownGoodByNamespace"] = {"team-a": "v1"}  # team-a rolled v2 back
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {})
    for namespace, expected in (("team-a", "v1"), ("team-b", "v2"), (None, "v2")):
        root = tmp_path / f"root-{namespace}"
        d = main.Deployer(dataclasses.replace(settings(root, url), namespace=namespace),
                          podinfo.Watcher(tmp_path / "annotations"), status.Status(failure_threshold=60), 0)
        assert asyncio.run(main.run_init(d, max_failures=3, poll=0)) == 0
        assert swap.Store(root).current("ds").version == expected, namespace  # type: ignore[union-attr]


def test_init_fails_clearly_without_request_or_last_known_good(tmp_path: Path, repo: FakeRepository, url: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    repo.add("src", "v1", tree_archive("v1"))
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {})
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main.run_init(deployer(tmp_path, url, timeout=0), max_failures=1, poll=0)) == 1
    assert "init failed: data set ds" in caplog.text and "no last-known-good version" in caplog.text


def test_init_keeps_a_verified_version_already_on_disk(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    request = repo.add("src", "v1", tree_archive("v1"))
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {"ds": request})
    assert asyncio.run(main.run_init(deployer(tmp_path, url), 1, 0)) == 0
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {})  # e.g. the pod restarted before a request
    assert asyncio.run(main.run_init(deployer(tmp_path, url, timeout=0), 1, 0)) == 0


def test_init_gives_up_on_corrupt_data_and_names_the_set(tmp_path: Path, repo: FakeRepository, url: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    request = repo.add("src", "v1", tree_archive("v1"), sha256="0" * 64)
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {"ds": request})
    d = deployer(tmp_path, url)
    d.settings.retry.sleep = lambda _: None
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main.run_init(d, max_failures=1, poll=0)) == 1
    assert "init failed: data set ds" in caplog.text and "sha256 mismatch" in caplog.text
    assert not (tmp_path / "root/ds").exists()


def test_init_as_a_process(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    repo.add("src", "v1", tree_archive("v1"), lkg=True)
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {})
    (tmp_path / "root").mkdir()
    done = subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", "datadeployer",
                           "--mode", "init", "--repository", url, "--root", str(tmp_path / "root"),
                           "--annotations-file", str(tmp_path / "annotations"), "--request-timeout", "0",
                           "--log-format", "text"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "root/ds/d/f0").read_bytes().startswith(b"v1")
    assert "falling back" in done.stderr


def _collector() -> tuple[Starlette, list[dict[str, Any]], list[int]]:
    received: list[dict[str, Any]] = []
    failures = [0]

    async def notify(request: Request) -> Response:
        if failures[0] > 0:
            failures[0] -= 1
            return PlainTextResponse("not yet", 503)
        received.append(await request.json())
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/notify", notify, methods=["POST"])]), received, failures


def test_the_sidecar_follows_requests_acknowledges_and_notifies(tmp_path: Path, repo: FakeRepository,
                                                               url: str) -> None:
    v1, v2 = repo.add("src", "v1", tree_archive("v1")), repo.add("src", "v2", tree_archive("v2"))
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {"ds": v1})
    app, received, _ = _collector()

    async def scenario(hook: str) -> None:
        d = deployer(tmp_path, url, notifier=hooks.Notifier(f"{hook}/notify", initial=0.01))
        loops = asyncio.create_task(main.follow(d, poll=0.01, resync=0.05))
        try:
            await waiting.eventually("v1 acknowledged", lambda: d.status.get("ds").version == "v1", 15.0)
            write_annotations(tmp_path / "annotations", {"ds": "src"}, {"ds": v2})
            await waiting.eventually("v2 acknowledged", lambda: d.status.get("ds").version == "v2", 15.0)
            assert d.status.synced() == (True, [])
            await waiting.eventually("the app to hear of v2",
                                     lambda: received and received[-1]["version"] == "v2", 15.0)
            entry = d.status.to_json()["sets"]["ds"]
            assert entry["requested"] == "v2" and entry["sha256"] == v2.sha256 and entry["deployedAt"]
            write_annotations(tmp_path / "annotations", {"ds": "src"}, {"ds": manifests.DataRequest("v3")})
            await waiting.eventually("the failure to show", lambda: d.status.get("ds").error is not None, 15.0)
            assert d.status.get("ds").version == "v2" and "not in the manifest" in (d.status.get("ds").error or "")
        finally:
            loops.cancel()
            d.notifier.close()  # type: ignore[union-attr]

    with serve_asgi(app) as hook:
        asyncio.run(scenario(hook))
    assert received[-1] == {"name": "ds", "version": "v2", "sha256": v2.sha256, "path": str(tmp_path / "root/ds")}


def test_notifications_are_retried_and_coalesced(tmp_path: Path) -> None:
    app, received, failures = _collector()
    failures[0] = 3

    async def scenario(hook: str) -> None:
        notifier = hooks.Notifier(f"{hook}/notify", initial=0.01, maximum=0.05)
        for version in ("v1", "v2", "v3"):
            notifier.announce({"name": "ds", "version": version})
        await notifier.idle()

    with serve_asgi(app) as hook:
        asyncio.run(scenario(hook))
    assert [r["version"] for r in received] == ["v3"]


def test_a_notify_url_off_loopback_is_refused() -> None:
    with pytest.raises(hooks.HookError, match="loopback only"):
        hooks.check_url("http://10.0.0.1/notify")


def test_status_endpoints_synced_and_watchdog_threshold() -> None:
    manual = clock.ManualClock(dt.datetime(2026, 1, 2, tzinfo=dt.UTC).timestamp())
    state = status.Status(failure_threshold=300, time=manual)
    state.get("ds").requested = "v2"
    with serve_asgi(status.app(state)) as base:
        assert httpx.get(f"{base}/synced").status_code == 503
        state.succeeded("ds", "v2", "a" * 64, clock.utcnow(manual))
        assert httpx.get(f"{base}/synced").status_code == 200
        state.get("ds").requested = "v3"
        state.failed("ds", "repository unreachable")
        answer = httpx.get(f"{base}/watchdog")
        assert answer.status_code == 200 and answer.text.startswith("warning")
        manual.advance(301)
        answer = httpx.get(f"{base}/watchdog")
        assert answer.status_code == 500 and "ds failing since 2026-01-02T00:00:00Z" in answer.text
        state.succeeded("ds", "v3", "b" * 64, clock.utcnow(manual))
        assert httpx.get(f"{base}/watchdog").text == "info: ok"
        assert httpx.get(f"{base}/status").json()["sets"]["ds"]["version"] == "v3"


def test_a_set_removed_while_it_syncs_leaves_no_status_behind(tmp_path: Path, repo: FakeRepository, url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A failure recorded after the declaration went away would stay in /status, /synced and
    # /watchdog for the life of the pod (nothing syncs that set any more to clear it).
    repo.add("src", "v1", tree_archive("v1"))
    annotations_file = tmp_path / "annotations"
    write_annotations(annotations_file, {"ds": "src"}, {"ds": manifests.DataRequest("v9", None)})
    d = deployer(tmp_path, url)
    d.refresh()
    started, release = threading.Event(), threading.Event()
    real_sync = main.syncing.sync

    def slow_sync(*args: Any) -> Any:
        started.set()
        release.wait(10)
        return real_sync(*args)

    monkeypatch.setattr(main.syncing, "sync", slow_sync)

    async def scenario() -> main.Outcome:
        step = asyncio.create_task(d.step("ds"))
        assert await asyncio.to_thread(started.wait, 10)
        write_annotations(annotations_file, {}, {})
        assert d.refresh() and "ds" not in d.status.sets
        release.set()
        return await step

    assert asyncio.run(scenario()) is main.Outcome.DONE
    assert d.status.sets == {} and d.status.synced() == (True, []) and d.status.watchdog() == ("info", "ok")


@pytest.mark.parametrize(("value", "admitted"), [("models/resnet", True), (" models ", True),
                                                 ("Models/ResNet 50", False), ("../../etc", False), ("", False)])
def test_the_datadeployer_refuses_exactly_the_declarations_the_webhook_denies(value: str, admitted: bool) -> None:
    notes = {"data.autocrane.io/m": value}
    try:
        options.parse_pod(notes)
        denied = False
    except errors.AnnotationError:
        denied = True
    found, problems = requests.data_sets(notes)
    usable = [s for s in found.values() if s.error is None]
    assert denied is not admitted and bool(usable) is admitted and not problems
