"""Archives: deterministic packing, and extraction that refuses every hostile entry."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from sidecars import archives
from tests.sidecars import hostile


def _extract(data: bytes, dest: Path, limits: archives.Limits | None = None) -> int:
    return archives.extract(io.BytesIO(data), dest, limits or archives.Limits())


def test_a_good_archive_extracts_with_files_links_and_modes(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    assert _extract(hostile.GOOD, dest) == 5 + 100  # the hardlink adds no bytes
    assert (dest / "sub/a.txt").read_bytes() == b"alpha"
    assert os.readlink(dest / "sub/to-a") == "a.txt" and (dest / "sub/to-a").read_bytes() == b"alpha"
    assert (dest / "hard-a").stat().st_ino == (dest / "sub/a.txt").stat().st_ino
    assert (dest / "b.bin").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("case", sorted(hostile.HOSTILE))
def test_hostile_archives_are_refused_and_nothing_escapes(tmp_path: Path, case: str) -> None:
    dest = tmp_path / "deep" / "er" / "out"
    dest.parent.mkdir(parents=True)
    with pytest.raises(archives.ArchiveError) as raised:
        _extract(hostile.HOSTILE[case], dest)
    if case != "not gzip at all":
        assert "entry" in str(raised.value)
    parents = (dest.parent, dest.parent.parent)
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(dest) and p not in parents]
    assert outside == []


def test_the_target_directory_must_be_new(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        _extract(hostile.GOOD, tmp_path / "out")


def test_limits_on_entries_file_size_and_total_size(tmp_path: Path) -> None:
    many = hostile.tar_gz(*(hostile.file(f"f{i}") for i in range(5)))
    with pytest.raises(archives.ArchiveError, match="more than 4 entries"):
        _extract(many, tmp_path / "a", archives.Limits(max_entries=4))
    big = hostile.tar_gz(hostile.file("big", b"x" * 1000))
    with pytest.raises(archives.ArchiveError, match="'big': 1000 bytes is over the 999 limit"):
        _extract(big, tmp_path / "b", archives.Limits(max_entry_bytes=999))
    with pytest.raises(archives.ArchiveError, match=r"'f3'.*expands past the 15 byte limit"):
        _extract(many, tmp_path / "c", archives.Limits(max_total_bytes=15))


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    data = hostile.tar_gz(hostile.file("big", os.urandom(200_000)))
    with pytest.raises(archives.ArchiveError, match=r"corrupt or truncated|truncated entry"):
        _extract(data[: len(data) // 2], tmp_path / "out")


def _tree(root: Path) -> None:
    (root / "d/e").mkdir(parents=True)
    (root / "d/e/f.txt").write_text("f")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    (root / "link").symlink_to("d/e/f.txt")
    (root / ".git").mkdir()
    (root / ".git/HEAD").write_text("ref")


def test_packing_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        _tree(root)
    os.utime(two / "d/e/f.txt", (1, 1))  # times and creation order must not matter
    packed = []
    for root in (one, two):
        out = io.BytesIO()
        sha, size = archives.pack(root, out, exclude=[".git"])
        assert sha == hashlib.sha256(out.getvalue()).hexdigest() and size == len(out.getvalue())
        packed.append(out.getvalue())
    assert packed[0] == packed[1]
    _extract(packed[0], tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in (tmp_path / "back").rglob("*")) == \
        ["d", "d/e", "d/e/f.txt", "link", "run.sh"]
    assert (tmp_path / "back/run.sh").stat().st_mode & 0o777 == 0o755


def test_packing_refuses_a_symlink_leaving_the_tree(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t/out").symlink_to("../../etc")
    with pytest.raises(archives.ArchiveError, match="'out'"):
        archives.pack(tmp_path / "t", io.BytesIO())
