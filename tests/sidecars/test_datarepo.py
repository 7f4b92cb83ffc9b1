"""The data repository: git, HTTP and directory sources become versions; retention; the HTTP API."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from autocrane import errors, manifests
from sidecars.datarepo import config, polling, server, store
from tests.sidecars import hostile
from tests.sidecars.servers import serve_asgi


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(minutes=1)
        return self.now


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "HOME": str(repo.parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "change") -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    return repo


def make(tmp_path: Path, *sources: config.Source) -> polling.Poller:
    return polling.Poller(store.Store(tmp_path / "state", Clock()), list(sources))


def test_a_git_source_makes_a_version_per_new_commit(tmp_path: Path, upstream: Path) -> None:
    first = commit(upstream, {"a.txt": "one", "sub/b.txt": "two"})
    poller = make(tmp_path, config.Source("models", config.Git(f"file://{upstream}", "main")))
    assert poller.poll("models") is True
    manifest = poller.store.manifest("models")
    assert manifest is not None and len(manifest.versions) == 1
    version = manifest.versions[0]
    assert version.origin["commit"] == first and manifest.last_known_good == version.version
    assert hashlib.sha256(poller.store.archive(version.sha256).read_bytes()).hexdigest() == version.sha256
    assert poller.poll("models") is False  # same commit
    commit(upstream, {}, "empty commit")
    assert poller.poll("models") is False  # new commit, same content: no new version
    commit(upstream, {"a.txt": "changed"})
    assert poller.poll("models") is True
    assert len(poller.store.manifest("models").versions) == 2  # type: ignore[union-attr]


def test_a_git_source_follows_a_branch_other_than_the_default(tmp_path: Path, upstream: Path) -> None:
    commit(upstream, {"a.txt": "main"})
    git(upstream, "checkout", "-q", "-b", "release")
    release = commit(upstream, {"a.txt": "release"})
    git(upstream, "checkout", "-q", "main")
    poller = make(tmp_path, config.Source("models", config.Git(f"file://{upstream}", "release")))
    assert poller.poll("models")
    assert poller.store.manifest("models").versions[0].origin["commit"] == release  # type: ignore[union-attr]


def test_git_credentials_go_in_the_environment_not_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    env = polling.sources.git_environment(config.Git("https://x", token_file=tmp_path / "token"), tmp_path)
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Bearer s3cret" and env["GIT_TERMINAL_PROMPT"] == "0"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
OTHER_UID = 12345


def _give_away(path: Path) -> None:
    for entry in [path, *path.rglob("*")]:
        os.lchown(entry, OTHER_UID, OTHER_UID)


@needs_root
def test_a_local_git_source_owned_by_another_user_is_not_refused_as_dubious(tmp_path: Path, upstream: Path) -> None:
    commit(upstream, {"a.txt": "one"})
    _give_away(upstream)  # a repository on a volume another UID wrote, as a git-sync sidecar would
    poller = make(tmp_path, config.Source("models", config.Git(f"file://{upstream}", "main")))
    assert poller.poll("models") is True, poller.status["models"].last_error


@needs_root
def test_the_working_copy_is_not_refused_as_dubious_after_the_uid_changed(tmp_path: Path, upstream: Path) -> None:
    commit(upstream, {"a.txt": "one"})
    poller = make(tmp_path, config.Source("models", config.Git(str(upstream), "main")))
    assert poller.poll("models") is True
    _give_away(poller.store.work("models"))  # kept on a volume, written before under another runAsUser
    commit(upstream, {"a.txt": "two"})
    assert poller.poll("models") is True, poller.status["models"].last_error


def test_a_uid_without_a_passwd_entry_gets_one_for_git_and_ssh_through_nss_wrapper(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(uid: int) -> NoReturn:
        raise KeyError(uid)

    monkeypatch.setattr(polling.sources.pwd, "getpwuid", unknown)
    monkeypatch.setattr(polling.sources, "_nss_wrapper", lambda: "libnss_wrapper.so.0")
    env = polling.sources.git_environment(config.Git("ssh://git@example.invalid/x.git"), tmp_path)
    assert env["LD_PRELOAD"] == "libnss_wrapper.so.0" and env["HOME"] == str(tmp_path)
    entry = Path(env["NSS_WRAPPER_PASSWD"]).read_text().split(":")
    assert entry[2:4] == [str(os.getuid()), str(os.getgid())] and entry[5] == str(tmp_path)
    assert Path(env["NSS_WRAPPER_GROUP"]).read_text().split(":")[2] == str(os.getgid())


def test_a_uid_with_a_passwd_entry_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(polling.sources, "_nss_wrapper", lambda: "libnss_wrapper.so.0")
    env = polling.sources.git_environment(config.Git("ssh://git@example.invalid/x.git"), tmp_path)
    assert "LD_PRELOAD" not in env and "HOME" not in env


class _Files(http.server.BaseHTTPRequestHandler):
    body: bytes = b""
    conditional: list[str] = []  # noqa: RUF012 - shared by the test on purpose

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.conditional.append(etag)
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def files() -> Iterator[tuple[type[_Files], str]]:
    handler = type("Files", (_Files,), {"conditional": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_an_http_source_is_polled_with_etags(tmp_path: Path, files: tuple[type[_Files], str]) -> None:
    handler, base = files
    handler.body = b"hello"
    poller = make(tmp_path, config.Source("words", config.Http(f"{base}/words.txt", "file", "words.txt")))
    assert poller.poll("words") is True
    assert poller.poll("words") is False and len(handler.conditional) == 1
    handler.body = b"hello again"
    assert poller.poll("words") is True
    version = poller.store.manifest("words").versions[-1]  # type: ignore[union-attr]
    assert version.origin["etag"] and version.origin["url"].endswith("/words.txt")


def test_an_http_archive_is_unpacked_with_the_same_checks(tmp_path: Path, files: tuple[type[_Files], str]) -> None:
    handler, base = files
    handler.body = hostile.GOOD
    poller = make(tmp_path, config.Source("a", config.Http(f"{base}/a.tar.gz", "archive")))
    assert poller.poll("a") is True
    handler.body = hostile.HOSTILE["tar slip"]
    assert poller.poll("a") is False
    assert "'..' in path" in (poller.status["a"].last_error or "")
    assert len(poller.store.manifest("a").versions) == 1  # type: ignore[union-attr]


def test_a_directory_source_and_retention(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    poller = make(tmp_path, config.Source("d", config.Directory(data), keep=2))
    shas = []
    for i in range(4):
        (data / "f.txt").write_text(f"content {i}")
        assert poller.poll("d") is True
        assert poller.poll("d") is False
        shas.append(poller.store.manifest("d").latest.sha256)  # type: ignore[union-attr]
    manifest = poller.store.manifest("d")
    assert manifest is not None
    assert [v.sha256 for v in manifest.versions] == [shas[0], shas[2], shas[3]]  # newest 2 + last known good
    kept = sorted(f"{sha}.tar.gz" for sha in set(shas) - {shas[1]})
    assert sorted(p.name for p in poller.store.archives.iterdir()) == kept


def test_a_failing_source_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok/x").write_text("x")
    poller = make(tmp_path, config.Source("bad", config.Git(f"file://{tmp_path}/missing")),
                  config.Source("ok", config.Directory(tmp_path / "ok")))
    assert poller.poll("bad") is False and "git fetch failed" in (poller.status["bad"].last_error or "")
    assert poller.poll("ok") is True
    assert not poller.ready() and poller.unready() == ["bad"]  # polled, but never successfully


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_not_ready_until_every_source_has_a_version_from_this_run_or_the_volume(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    broken = config.Source("d", config.Git(f"file://{tmp_path}/missing"))
    poller = make(tmp_path, broken)
    assert not poller.ready()  # nothing polled yet
    poller.poll("d")
    assert not poller.ready() and poller.health()["unready"] == ["d"]
    working = make(tmp_path, config.Source("d", config.Directory(tmp_path / "d")))
    working.poll("d")
    assert working.ready()
    after_restart = make(tmp_path, broken)  # its upstream is down now, but the volume has its versions
    assert after_restart.ready()
    after_restart.poll("d")
    assert after_restart.ready()


def test_a_source_failing_for_long_is_stale_but_stays_ready_and_live(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    ticks = Ticks()
    poller = polling.Poller(store.Store(tmp_path / "state", Clock()),
                            [config.Source("d", config.Directory(tmp_path / "d")),
                             config.Source("g", config.Git(f"file://{tmp_path}/missing"))],
                            stale_after=300, monotonic=ticks)
    poller.poll("d")
    ticks.now += 299
    assert poller.health()["stale"] == []
    ticks.now += 2
    assert poller.health()["stale"] == ["d", "g"]  # g never succeeded: counted from the start
    poller.poll("d")
    health = poller.health()
    assert health["stale"] == ["g"] and health["sources"]["g"]["stale"] is True  # type: ignore[index]
    assert polling.STALE.labels("g")._value.get() == 1 and polling.STALE.labels("d")._value.get() == 0
    assert poller.wedged() is None


def test_a_poll_that_never_returns_fails_liveness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    ticks = Ticks()
    poller = polling.Poller(store.Store(tmp_path / "state", Clock()),
                            [config.Source("d", config.Directory(tmp_path / "d"))], stale_after=60, monotonic=ticks)
    entered, release = threading.Event(), threading.Event()

    def hang(*_: object) -> NoReturn:
        entered.set()
        release.wait(10)
        raise OSError("released")

    monkeypatch.setattr(polling.sources, "poll", hang)
    thread = threading.Thread(target=poller.poll, args=("d",))
    thread.start()
    try:
        assert entered.wait(10)
        ticks.now += 59
        assert poller.wedged() is None
        ticks.now += 2
        assert poller.wedged() == "polls running for over 60s (wedged): d"
        with serve_asgi(server.app(poller.store, poller)) as base:
            livez = httpx.get(f"{base}/livez")
            assert livez.status_code == 503 and "wedged" in livez.text
    finally:
        release.set()
        thread.join(10)
    assert poller.wedged() is None


def test_state_survives_a_restart(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    poller = make(tmp_path, config.Source("d", config.Directory(tmp_path / "d")))
    poller.poll("d")
    again = make(tmp_path, config.Source("d", config.Directory(tmp_path / "d")))
    assert again.store.manifest("d") == poller.store.manifest("d") and again.ready()
    assert again.poll("d") is False  # the fingerprint was persisted with the manifest


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, polling.Poller]]:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/big").write_bytes(bytes(range(256)) * 400)
    poller = make(tmp_path, config.Source("team/d", config.Directory(tmp_path / "d")))
    poller.poll("team/d")
    with serve_asgi(server.app(poller.store, poller, token="t0ken")) as base:
        yield base, poller


def test_the_api_serves_manifests_and_archives_with_range(api: tuple[str, polling.Poller]) -> None:
    base, _ = api
    auth = {"Authorization": "Bearer t0ken"}
    every = manifests.parse_manifest(httpx.get(f"{base}/v1/manifest", headers=auth).content)
    version = every["team/d"].versions[0]
    one = httpx.get(f"{base}/v1/sources/team/d", headers=auth).json()
    assert one["versions"][0]["sha256"] == version.sha256
    whole = httpx.get(f"{base}/v1/archives/{version.sha256}.tar.gz", headers=auth).content
    assert hashlib.sha256(whole).hexdigest() == version.sha256 and len(whole) == version.size
    part = httpx.get(f"{base}/v1/archives/{version.sha256}.tar.gz", headers=auth | {"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == whole[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    assert httpx.get(f"{base}/v1/archives/{'0' * 64}.tar.gz", headers=auth).status_code == 404
    assert httpx.get(f"{base}/v1/sources/nope", headers=auth).status_code == 404


def test_the_api_requires_the_bearer_token_except_for_health(api: tuple[str, polling.Poller]) -> None:
    base, _ = api
    assert httpx.get(f"{base}/v1/manifest").status_code == 401
    assert httpx.get(f"{base}/v1/manifest", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{base}/livez").status_code == 200
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["sources"]["team/d"]["polls"] == 1
    assert "autocrane_datarepository_polls_total" in httpx.get(f"{base}/metrics").text


def test_with_a_write_token_reads_are_open_and_writes_need_it(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    poller = make(tmp_path, config.Source("d", config.Directory(tmp_path / "d")))
    poller.poll("d")
    version = poller.store.manifest("d").latest.version  # type: ignore[union-attr]
    token_file = tmp_path / "write-token"
    token_file.write_text("s3cret\n")

    def write_token() -> str:
        return token_file.read_text().strip() if token_file.exists() else ""

    with serve_asgi(server.app(poller.store, poller, write_token=write_token)) as base:
        assert httpx.get(f"{base}/v1/manifest").status_code == 200
        assert httpx.get(f"{base}/v1/sources/d").status_code == 200
        put = f"{base}/v1/sources/d/last-known-good"
        body = {"version": version}
        assert httpx.put(put, json=body).status_code == 401
        assert httpx.put(put, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.put(put, json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        token_file.write_text("r0tated")  # a rotated Secret: the next write needs the new token
        assert httpx.put(put, json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 401
        assert httpx.put(put, json=body, headers={"Authorization": "Bearer r0tated"}).status_code == 200
        token_file.unlink()  # unreadable or empty: writes are refused, never opened
        assert httpx.put(put, json=body).status_code == 401
        assert httpx.put(put, json=body, headers={"Authorization": "Bearer"}).status_code == 401


def test_the_controller_sets_the_last_known_good(api: tuple[str, polling.Poller], tmp_path: Path) -> None:
    base, poller = api
    auth = {"Authorization": "Bearer t0ken"}
    (tmp_path / "d/new").write_text("new")
    poller.poll("team/d")
    newest = poller.store.manifest("team/d").latest.version  # type: ignore[union-attr]
    answer = httpx.put(f"{base}/v1/sources/team/d/last-known-good", headers=auth, json={"version": newest})
    assert answer.status_code == 200 and answer.json()["lastKnownGood"] == newest
    assert httpx.put(f"{base}/v1/sources/team/d/last-known-good", headers=auth,
                     json={"version": "nope"}).status_code == 404


def test_each_namespace_keeps_its_own_last_known_good_and_the_source_moves_only_forward(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    poller = make(tmp_path, config.Source("d", config.Directory(data), keep=3))
    ids = []
    for i in range(3):
        (data / "f").write_text(str(i))
        poller.poll("d")
        ids.append(poller.store.manifest("d").latest.version)  # type: ignore[union-attr]
    v1, v2, v3 = ids
    with serve_asgi(server.app(poller.store, poller)) as base:
        put = f"{base}/v1/sources/d/last-known-good"
        assert httpx.put(put, json={"version": v3, "namespace": "team-b"}).status_code == 200
        answer = httpx.put(put, json={"version": v1, "namespace": "team-a"})  # team-a rolled back
        assert answer.status_code == 200
        assert answer.json()["lastKnownGoodByNamespace"] == {"team-a": v1, "team-b": v3}
        assert answer.json()["lastKnownGood"] == v3, "the source's is the newest a rollout completed"
        for body in ({"version": v1, "namespace": "Team_A"}, {"version": v1, "namespace": "a" * 64},
                     {"version": v1, "namespace": 3}):
            refused = httpx.put(put, json=body)
            assert refused.status_code == 400 and "namespace" in refused.text
        assert httpx.put(put, json={"version": v2}).json()["lastKnownGood"] == v2  # unscoped: the source's, as before
        manifest = manifests.parse_manifest(httpx.get(f"{base}/v1/manifest").content)["d"]
    assert manifest.for_namespace("team-a").last_known_good == v1
    assert manifest.for_namespace("team-c").last_known_good == v2
    (data / "f").write_text("newest")
    again = make(tmp_path, config.Source("d", config.Directory(data), keep=1))  # restarted, keeping fewer
    assert again.store.manifest("d").namespaces == {"team-a": v1, "team-b": v3}  # type: ignore[union-attr]
    again.poll("d")
    kept = [v.version for v in again.store.manifest("d").versions]  # type: ignore[union-attr]
    assert kept[:3] == [v1, v2, v3] and len(kept) == 4, "retention keeps every last known good, and the newest"


@pytest.mark.parametrize("document, message", [
    ({}, "'sources' list"),
    ({"sources": [{"name": "Bad"}]}, "sources\\[0\\].name"),
    ({"sources": [{"name": "a", "git": {"url": "x"}, "http": {"url": "y"}}]}, "exactly one of"),
    ({"sources": [{"name": "a", "http": {"url": "ftp://x"}}]}, "http\\(s\\) URL"),
    ({"sources": [{"name": "a", "git": {"url": "x", "branch": "main"}}]}, "unknown keys \\['branch'\\]"),
    ({"sources": [{"name": "a", "directory": {"path": "/x"}, "every": 0}]}, "every must be > 0"),
    ({"sources": [{"name": "a", "directory": {}}]}, "sources\\[0\\].directory.path is required"),
])
def test_config_errors_name_the_key(document: Any, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        config.parse(document)


@pytest.mark.parametrize("flag", ["--token-file", "--write-token-file"])
def test_an_empty_or_missing_token_file_stops_the_start_instead_of_opening_the_api(
        tmp_path: Path, flag: str, capfd: pytest.CaptureFixture[str]) -> None:
    from sidecars.datarepo import main

    (tmp_path / "sources.yaml").write_text("sources: []\n")
    (tmp_path / "empty").write_text("\n")
    base = ["--config", str(tmp_path / "sources.yaml"), "--data-dir", str(tmp_path / "state"), "--log-format=text"]
    assert main.main([*base, flag, str(tmp_path / "empty")]) == 2
    assert f"{flag} {tmp_path / 'empty'}: the file is empty" in capfd.readouterr().err
    assert main.main([*base, flag, str(tmp_path / "missing")]) == 2
    assert "No such file" in capfd.readouterr().err
