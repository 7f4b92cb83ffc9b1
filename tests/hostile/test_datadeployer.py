"""Hostile annotations against the datadeployer (issue 8, defects 4, 7 and 12): it keeps following its
pod, init mode fails with one line, and ``--notify-url`` delivers exactly where it was checked to."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autocrane import manifests
from devcluster import controlplane, downwardapi
from sidecars.datadeploy import hooks, main, requests
from tests import waiting
from tests.hostile import values
from tests.sidecars.servers import FakeRepository
from tests.sidecars.test_datadeploy_modes import deployer, write_annotations
from tests.sidecars.test_datadeploy_sync import tree_archive

DS = "request.data.autocrane.io/ds"


@pytest.fixture
def served() -> Iterator[tuple[FakeRepository, str]]:
    """A fake data repository on 127.0.0.1 and its URL."""
    fake = FakeRepository()
    with fake.serve() as base:
        yield fake, base


@contextlib.asynccontextmanager
async def _following(d: main.Deployer, poll: float = 0.01) -> Any:
    loops = asyncio.create_task(main.follow(d, poll=poll, resync=0.05))
    try:
        yield loops
    finally:
        loops.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loops


def _acked(d: main.Deployer, version: str) -> bool:
    entry = d.status.sets.get("ds")
    return entry is not None and entry.version == version and entry.error is None


# --- defect 4: the datadeployer stopped following its annotations ----------------------------------------

def test_a_request_nested_10000_deep_is_its_data_sets_error_and_a_later_good_request_is_served(
        tmp_path: Path, served: tuple[FakeRepository, str]) -> None:
    repo, url = served
    v1, v2 = repo.add("src", "v1", tree_archive("v1")), repo.add("src", "v2", tree_archive("v2"))
    notes = tmp_path / "annotations"
    write_annotations(notes, {"ds": "src", "other": "src"}, {"ds": v1, "other": v1})

    async def scenario() -> None:
        d = deployer(tmp_path, url)
        async with _following(d) as loops:
            await waiting.eventually("v1 live", lambda: _acked(d, "v1"), 15)
            notes.write_text(downwardapi.format_annotations({
                "data.autocrane.io/ds": "src", "data.autocrane.io/other": "src", DS: values.DEEP,
                "request.data.autocrane.io/other": v2.to_annotation()}))
            await waiting.eventually("the other set moved on", lambda: d.status.get("other").version == "v2", 15)
            error = await waiting.eventually("the error on ds", lambda: d.status.get("ds").error, 15)
            assert error.startswith(f"{DS}: '[[[[") and "characters)" in error and len(error) < 300
            assert d.status.get("ds").version == "v1" and not loops.done()
            write_annotations(notes, {"ds": "src", "other": "src"}, {"ds": v2, "other": v2})
            await waiting.eventually("v2 served after all", lambda: _acked(d, "v2"), 15)

    asyncio.run(scenario())


def test_an_unexpected_error_in_one_sync_is_reported_on_its_set_and_retried(
        tmp_path: Path, served: tuple[FakeRepository, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    repo, url = served
    v1 = repo.add("src", "v1", tree_archive("v1"))
    write_annotations(tmp_path / "annotations", {"ds": "src"}, {"ds": v1})
    real_sync, calls = main.syncing.sync, [0]

    def sync(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] <= 2:
            raise RecursionError("maximum recursion depth exceeded")
        return real_sync(*args)

    monkeypatch.setattr(main.syncing, "sync", sync)

    async def scenario() -> None:
        d = deployer(tmp_path, url)
        async with _following(d):
            error = await waiting.eventually("the failure reported", lambda: d.status.get("ds").error, 15)
            assert error == "internal error: RecursionError: 'maximum recursion depth exceeded'"
            await waiting.eventually("v1 after the retries", lambda: _acked(d, "v1"), 15)

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert sum("unexpected error" in r.getMessage() for r in caplog.records) == 1, "logged once, retried twice"


def test_an_unexpected_error_reading_the_annotations_is_reported_and_following_goes_on(
        tmp_path: Path, served: tuple[FakeRepository, str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo, url = served
    v1 = repo.add("src", "v1", tree_archive("v1"))
    notes = tmp_path / "annotations"
    write_annotations(notes, {"ds": "src"}, {})
    real, broken = requests.data_sets, [True]

    def data_sets(found: Any) -> Any:
        if broken[0]:
            raise MemoryError("one annotation too many")
        return real(found)

    monkeypatch.setattr(main.requests, "data_sets", data_sets)

    async def scenario() -> None:
        d = deployer(tmp_path, url)
        async with _following(d) as loops:
            await waiting.eventually("the problem reported", lambda: d.status.annotations_error, 15)
            assert "MemoryError" in (d.status.annotations_error or "") and not loops.done()
            broken[0] = False
            write_annotations(notes, {"ds": "src"}, {"ds": v1})
            await waiting.eventually("v1 served once the file reads again", lambda: _acked(d, "v1"), 15)

    asyncio.run(scenario())


def test_livez_fails_when_the_follow_loop_has_stopped(tmp_path: Path, served: tuple[FakeRepository, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = served
    async def dies(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the loop is gone")

    monkeypatch.setattr(main, "follow", dies)
    write_annotations(tmp_path / "annotations", {}, {})
    port = controlplane.free_port()

    async def scenario() -> httpx.Response:
        d = deployer(tmp_path, url)
        server = asyncio.create_task(main.run_sidecar(d, "127.0.0.1", port, 0.01, 0.05))
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                async def livez() -> httpx.Response | None:
                    with contextlib.suppress(httpx.TransportError):
                        return await http.get(f"http://127.0.0.1:{port}/livez")
                    return None

                return await waiting.eventually("an answer", livez, 15)
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server

    answer = asyncio.run(scenario())
    assert answer.status_code == 503 and answer.text == "the follow loop stopped\n"


def test_init_with_a_request_nested_10000_deep_exits_1_with_one_error_line_and_no_traceback(
        tmp_path: Path, served: tuple[FakeRepository, str]) -> None:
    _, url = served
    (tmp_path / "root").mkdir()
    notes = downwardapi.format_annotations({"data.autocrane.io/ds": "src", DS: values.DEEP})
    (tmp_path / "annotations").write_text(notes)
    done = subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", "datadeployer", "--mode",
                           "init", "--repository", url, "--root", str(tmp_path / "root"), "--annotations-file",
                           str(tmp_path / "annotations"), "--max-failures", "1", "--log-format", "text"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if " error " in line]
    assert f"init failed: data set ds: {DS}: '[[[[" in line and len(line) < 400


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(notes=values.annotation_maps(), ours=st.fixed_dictionaries(
    {}, optional={"data.autocrane.io/ds": values.VALUES, DS: values.VALUES}), junk=st.none() | st.binary(max_size=200))
def test_any_annotations_file_leaves_the_sidecar_following(
        tmp_path: Path, served: tuple[FakeRepository, str], notes: dict[str, str], ours: dict[str, str],
        junk: bytes | None) -> None:
    """Whatever the file says in between (any annotations, or bytes that are no annotations file), the
    next good request is still served."""
    repo, url = served
    if "v1" not in [v["version"] for v in repo.sources.get("src", {}).get("versions", [])]:
        repo.add("src", "v1", tree_archive("v1"))
        repo.add("src", "v2", tree_archive("v2"))
    good = [manifests.DataRequest(v["version"], v["sha256"]) for v in repo.sources["src"]["versions"]]
    notes_file = tmp_path / "annotations"

    async def scenario() -> None:
        d = deployer(tmp_path, url)
        reads = [0]
        real_refresh = d.refresh

        def refresh() -> bool:
            reads[0] += 1
            return real_refresh()

        d.refresh = refresh  # type: ignore[method-assign]
        async with _following(d, poll=0.005) as loops:
            if junk is not None:
                notes_file.write_bytes(junk)
            else:
                notes_file.write_text(downwardapi.format_annotations(notes | ours))
            seen = reads[0]
            await waiting.eventually("the hostile file read twice", lambda: reads[0] >= seen + 2, 15)
            target = good[seen % 2]
            write_annotations(notes_file, {"ds": "src"}, {"ds": target})
            await waiting.eventually(f"{target.version} served", lambda: _acked(d, target.version), 15)
            assert not loops.done()

    asyncio.run(scenario())


# --- defect 7: the request's checks accepted a trailing newline ------------------------------------------

@pytest.mark.parametrize("check, value", [
    (manifests.check_sha256, "a" * 64 + "\n"), (manifests.check_version, "v1\n"),
    (manifests.check_source, "models\n"), (manifests.check_source, "models/resnet\n"),
])
def test_a_trailing_newline_is_refused_by_every_manifest_check(check: Any, value: str) -> None:
    with pytest.raises(manifests.ManifestError):
        check(value)


@pytest.mark.parametrize("value", ['{"version": "v1\\n"}', '{"version": "v1", "sha256": "' + "a" * 64 + '\\n"}'])
def test_a_request_with_a_trailing_newline_is_refused_naming_the_key(value: str) -> None:
    with pytest.raises(manifests.ManifestError, match=DS):
        manifests.parse_request(value, DS)


def test_a_manifest_version_with_a_trailing_newline_is_refused() -> None:
    body = {"version": "v1\n", "sha256": "a" * 64, "size": 1, "created": "2026-01-02T03:04:05Z"}
    with pytest.raises(manifests.ManifestError, match="versions"):
        manifests.Version.from_json(body, "sources.x.versions[0]")


# --- defect 12: --notify-url was checked and delivered by two different parsers ---------------------------

@pytest.mark.parametrize("url", [
    "http://user@127.0.0.1:9/x", "http://127.0.0.1:9@10.0.0.1/x", "http://127.0.0.1:0/x", "http://127.0.0.1:-1/x",
    "http://127.0.0.1:99999/x", "http://127.0.0.1:9/x\r\nX-Injected: 1", "http://127.0.0.1:9/x\n",
    "http://127.0.0.1:9/a b", "http://127.0.0.1:9/\x00", "http://127.0.0.1:9/é", "http://localhost:9/x",
    "http://127.1:9/x", "https://127.0.0.1:9/x", "http://10.0.0.1:9/x", "http://[fd00::1]:9/x",
    "http://127.0.0.1:9/x#frag", "ftp://127.0.0.1/x", "127.0.0.1:9/x",
])
def test_a_notify_url_that_would_not_deliver_to_loopback_as_checked_is_refused_at_start(url: str) -> None:
    with pytest.raises(hooks.HookError, match=r"--notify-url .*expected http://127\.0\.0\.1:PORT/PATH"):
        hooks.check_url(url)


@pytest.mark.parametrize("url, host, port, target", [
    ("http://127.0.0.1:9/x", "127.0.0.1", 9, "/x"), ("http://127.0.0.1/", "127.0.0.1", 80, "/"),
    ("http://[::1]:8080/hook?a=b", "::1", 8080, "/hook?a=b"), ("http://127.0.0.2:1", "127.0.0.2", 1, "/"),
])
def test_a_loopback_notify_url_is_parsed_once_into_what_is_delivered(url: str, host: str, port: int,
                                                                     target: str) -> None:
    assert hooks.check_url(url) == hooks.Target(host, port, target)


class _Hook(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers["Host"], body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[int, list[tuple[str, str, bytes]]]]:
    seen: ClassVar[list[tuple[str, str, bytes]]] = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Hook", (_Hook,), {"seen": seen}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_port, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_notification_goes_to_the_checked_host_and_path_never_through_a_proxy(
        hook: tuple[int, list[tuple[str, str, bytes]]], monkeypatch: pytest.MonkeyPatch) -> None:
    port, seen = hook
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # a proxy that would swallow it
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)

    async def scenario() -> None:
        notifier = hooks.Notifier(f"http://127.0.0.1:{port}/reload?set=ds", initial=0.01, maximum=0.05)
        notifier.announce({"name": "ds", "version": "v1", "sha256": "a" * 64, "path": "/data/ds"})
        await asyncio.wait_for(notifier.idle(), 15)

    asyncio.run(scenario())
    ((path, host, body),) = seen
    assert path == "/reload?set=ds" and host == f"127.0.0.1:{port}" and b'"version": "v1"' in body


def test_the_datadeployer_refuses_a_notify_url_with_user_information_at_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", "datadeployer", "--mode",
                           "sidecar", "--repository", "http://127.0.0.1:9", "--root", str(tmp_path),
                           "--notify-url", "http://user@127.0.0.1:9/x", "--log-format", "text"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: --notify-url 'http://user@127.0.0.1:9/x': user information is not allowed" in done.stderr
