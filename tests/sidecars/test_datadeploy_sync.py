"""The datadeployer's sync: verified downloads, atomic swaps, and live data that nothing corrupts."""

from __future__ import annotations

import io
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from autocrane import manifests
from sidecars import archives
from sidecars.datadeploy import fetching, swap, syncing
from tests.sidecars import hostile
from tests.sidecars.servers import FakeRepository

NO_WAIT = fetching.Retry(attempts=3, sleep=lambda _: None)


def version_of(tree: Path) -> str:
    """The version id in a tree's directory name ``<version>-<random>`` (swap.Store names them so)."""
    return tree.name.rsplit("-", 1)[0]


def tree_archive(version: str, files: int = 3, size: int = 100) -> bytes:
    """A ``.tar.gz`` whose every file says which version it belongs to."""
    return hostile.tar_gz(hostile.directory("d"), *(
        hostile.file(f"d/f{i}", (version.encode() + b"\n") * (size // (len(version) + 1) + 1))
        for i in range(files)))


def settings(root: Path, url: str, limits: archives.Limits | None = None) -> syncing.Settings:
    root.mkdir(exist_ok=True)
    return syncing.Settings(root, fetching.Repository(url, timeout=5), limits or archives.Limits(), NO_WAIT)


def live(root: Path, name: str = "ds") -> tuple[str, dict[str, bytes]]:
    """(link target, file contents) of the live tree."""
    link = root / name
    return os.readlink(link), {p.relative_to(link).as_posix(): p.read_bytes()
                               for p in sorted(link.rglob("*")) if p.is_file()}


def test_a_requested_version_is_downloaded_verified_and_published(tmp_path: Path, repo: FakeRepository,
                                                                  url: str) -> None:
    request = repo.add("src", "v1", tree_archive("v1"))
    s = settings(tmp_path / "root", url)
    store = swap.Store(s.root)
    deployed, changed = syncing.sync(s, store, "ds", "src", request)
    assert changed and deployed.version == "v1" and deployed.sha256 == request.sha256
    target, files = live(s.root)
    assert target.startswith(".versions/ds/v1-") and not os.path.isabs(target)
    assert set(files) == {"d/f0", "d/f1", "d/f2"} and files["d/f0"].startswith(b"v1\n")
    assert syncing.sync(s, store, "ds", "src", request) == (store.current("ds"), False)
    assert not list((s.root / ".downloads").iterdir())


def test_only_current_and_previous_are_kept_and_rollback_needs_no_download(tmp_path: Path, repo: FakeRepository,
                                                                          url: str) -> None:
    requests = [repo.add("src", f"v{i}", tree_archive(f"v{i}")) for i in range(1, 4)]
    s = settings(tmp_path / "root", url)
    store = swap.Store(s.root)
    for request in requests:
        syncing.sync(s, store, "ds", "src", request)
    kept = sorted(version_of(d.path) for d in store.trees("ds"))
    assert kept == ["v2", "v3"]
    before = len(repo.requests)
    syncing.sync(s, store, "ds", "src", requests[1])  # back to v2: already on disk
    assert live(s.root)[1]["d/f0"].startswith(b"v2\n")
    assert not any("/archives/" in path for path, _ in repo.requests[before:])


@pytest.mark.parametrize("case", sorted(hostile.HOSTILE))
def test_a_hostile_archive_never_replaces_live_data(tmp_path: Path, repo: FakeRepository, url: str,
                                                   case: str) -> None:
    s = settings(tmp_path / "root", url)
    store = swap.Store(s.root)
    syncing.sync(s, store, "ds", "src", repo.add("src", "v1", tree_archive("v1")))
    before = live(s.root)
    with pytest.raises(syncing.SyncError, match="refused archive"):
        syncing.sync(s, store, "ds", "src", repo.add("src", "v2", hostile.HOSTILE[case]))
    assert live(s.root) == before
    assert [version_of(d.path) for d in store.trees("ds")] == ["v1"]
    assert sorted(p.name for p in (s.root / ".versions/ds").iterdir() if not p.name.endswith(".json")) == \
        [Path(before[0]).name]
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "outside").exists()


@pytest.mark.parametrize("lie", ["sha256 mismatch", "truncated download", "larger than announced",
                                 "request disagrees with manifest", "version not in manifest"])
def test_a_download_that_does_not_match_never_replaces_live_data(tmp_path: Path, repo: FakeRepository, url: str,
                                                                 lie: str) -> None:
    s = settings(tmp_path / "root", url)
    store = swap.Store(s.root)
    syncing.sync(s, store, "ds", "src", repo.add("src", "v1", tree_archive("v1")))
    before = live(s.root)
    data = tree_archive("v2")
    request = {
        "sha256 mismatch": lambda: repo.add("src", "v2", data, sha256="0" * 64),
        "truncated download": lambda: repo.add("src", "v2", data, size=len(data) + 1000),
        "larger than announced": lambda: repo.add("src", "v2", data, size=len(data) - 10),
        "request disagrees with manifest": lambda: manifests.DataRequest(
            "v2", "1" * 64) if repo.add("src", "v2", data) else None,
        "version not in manifest": lambda: manifests.DataRequest("v9"),
    }[lie]()
    assert request is not None
    with pytest.raises(syncing.SyncError) as raised:
        syncing.sync(s, store, "ds", "src", request)
    assert any(word in str(raised.value) for word in ("sha256", "shorter", "larger", "not in the manifest"))
    assert live(s.root) == before
    assert not list((s.root / ".downloads").glob("*.part"))


def test_an_unreachable_repository_never_replaces_live_data(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    s = settings(tmp_path / "root", url)
    store = swap.Store(s.root)
    syncing.sync(s, store, "ds", "src", repo.add("src", "v1", tree_archive("v1")))
    before = live(s.root)
    gone = settings(s.root, "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(syncing.SyncError, match="unreachable"):
        syncing.sync(gone, store, "ds", "src", manifests.DataRequest("v2"))
    assert live(s.root) == before


def test_a_dropped_connection_resumes_with_range(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    data = hostile.tar_gz(hostile.file("big", os.urandom(1 << 20)))
    request = repo.add("src", "v1", data)
    repo.drop_after = 300_000
    s = settings(tmp_path / "root", url)
    syncing.sync(s, swap.Store(s.root), "ds", "src", request)
    ranges = [r for path, r in repo.requests if "/archives/" in path]
    assert ranges[0] is None and ranges[1] is not None and int(ranges[1][6:-1]) >= 300_000
    assert len(ranges) == 2


def test_a_partial_download_left_by_a_crash_is_resumed(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    data = hostile.tar_gz(hostile.file("big", os.urandom(50_000)))
    request = repo.add("src", "v1", data)
    s = settings(tmp_path / "root", url)
    (s.root / ".downloads").mkdir()
    (s.root / ".downloads" / f"{request.sha256}.part").write_bytes(data[:1000])
    syncing.sync(s, swap.Store(s.root), "ds", "src", request)
    assert [r for p, r in repo.requests if "/archives/" in p] == ["bytes=1000-"]


def test_a_server_ignoring_range_restarts_the_download_and_the_extraction(tmp_path: Path, repo: FakeRepository,
                                                                          url: str) -> None:
    data = hostile.tar_gz(*(hostile.file(f"f{i}", os.urandom(100_000)) for i in range(5)))
    request = repo.add("src", "v1", data)
    repo.ignore_range = True
    s = settings(tmp_path / "root", url)
    (s.root / ".downloads").mkdir()
    (s.root / ".downloads" / f"{request.sha256}.part").write_bytes(data[:200_000])
    syncing.sync(s, swap.Store(s.root), "ds", "src", request)
    assert [r for p, r in repo.requests if "/archives/" in p] == ["bytes=200000-"]  # answered 200: start over
    assert sorted(p.name for p in (s.root / "ds").iterdir()) == [f"f{i}" for i in range(5)]


def test_crash_leftovers_are_removed_and_the_link_survives(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    s = settings(tmp_path / "root", url)
    store = swap.Store(s.root)
    syncing.sync(s, store, "ds", "src", repo.add("src", "v1", tree_archive("v1")))
    before = live(s.root)
    half = s.root / ".versions/ds/v2-deadbeef"
    half.mkdir()
    (half / "partial").write_text("x")
    (s.root / ".ds.link-0000").symlink_to(".versions/ds/v2-deadbeef")
    swap.Store(s.root).recover()
    assert not half.exists() and not (s.root / ".ds.link-0000").exists()
    assert live(s.root) == before and swap.Store(s.root).current("ds").version == "v1"  # type: ignore[union-attr]


def test_readers_never_see_a_mixed_or_missing_tree_during_100_swaps(tmp_path: Path, repo: FakeRepository,
                                                                   url: str) -> None:
    s = settings(tmp_path / "root", url)
    store = swap.Store(s.root)
    syncing.sync(s, store, "ds", "src", repo.add("src", "v0", tree_archive("v0", files=8)))
    stop, problems, reads, retired = threading.Event(), [], [0], [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                target = os.readlink(s.root / "ds")  # resolve once, like an app opening the data set
            except OSError as error:
                problems.append(f"link missing: {error}")
                continue
            try:
                contents = {(s.root / target / "d" / f"f{i}").read_bytes() for i in range(8)}
            except FileNotFoundError:
                if not (s.root / target).exists():
                    retired[0] += 1  # pruned two swaps later, while this reader lagged behind
                    continue
                problems.append(f"file missing in live tree {target}")
                continue
            if len(contents) != 1 or not next(iter(contents)).startswith(version_of(Path(target)).encode()):
                problems.append(f"mixed tree {target}")
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 101):
            syncing.sync(s, store, "ds", "src", repo.add("src", f"v{i}", tree_archive(f"v{i}", files=8)))
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert reads[0] > 100 and live(s.root)[1]["d/f0"].startswith(b"v100\n")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs to simulate a full disk: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("where", ["while extracting", "while downloading"])
def test_a_full_disk_never_replaces_live_data(small_disk: Path, repo: FakeRepository, url: str, where: str) -> None:
    s = settings(small_disk / "root", url)
    store = swap.Store(s.root)
    syncing.sync(s, store, "ds", "src", repo.add("src", "v1", tree_archive("v1")))
    before = live(s.root)
    content = b"\x00" * (4 << 20) if where == "while extracting" else os.urandom(3 << 20)
    with pytest.raises(syncing.SyncError, match="disk full"):
        syncing.sync(s, store, "ds", "src", repo.add("src", "v2", hostile.tar_gz(hostile.file("big", content))))
    assert live(s.root) == before
    assert [version_of(d.path) for d in store.trees("ds")] == ["v1"]
    assert len(list((s.root / ".versions/ds").iterdir())) == 2  # the v1 tree and its .json, nothing else
    assert not list((s.root / ".downloads").iterdir())


def test_extraction_limits_apply_to_downloads(tmp_path: Path, repo: FakeRepository, url: str) -> None:
    s = settings(tmp_path / "root", url, archives.Limits(max_total_bytes=1000))
    data = hostile.tar_gz(hostile.file("big", b"\x00" * 10_000))
    with pytest.raises(syncing.SyncError, match=r"'big'.*byte limit"):
        syncing.sync(s, swap.Store(s.root), "ds", "src", repo.add("src", "v1", data))
    assert not (s.root / "ds").exists()


def test_the_fixture_archive_helper_makes_valid_trees(tmp_path: Path) -> None:
    archives.extract(io.BytesIO(tree_archive("vX")), tmp_path / "x")
    assert (tmp_path / "x/d/f2").read_bytes().startswith(b"vX\n")
