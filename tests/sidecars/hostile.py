"""Builders of well-formed and hostile ``.tar.gz`` archives for the tests (real tar bytes)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

Entry = Callable[[tarfile.TarFile], None]


def tar_gz(*entries: Entry) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            entry(tar)
    return buffer.getvalue()


def file(name: str, data: bytes = b"data", mode: int = 0o644) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))
    return add


def directory(name: str) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    return add


def link(name: str, target: str, hard: bool = False) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), target
        tar.addfile(info)
    return add


def special(name: str, kind: bytes) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.devmajor, info.devminor = kind, 1, 3
        tar.addfile(info)
    return add


GOOD = tar_gz(directory("sub"), file("sub/a.txt", b"alpha"), file("b.bin", b"\x00" * 100, 0o755),
              link("sub/to-a", "a.txt"), link("hard-a", "sub/a.txt", hard=True))

HOSTILE = {
    "tar slip": tar_gz(file("ok.txt"), file("../escaped.txt")),
    "tar slip inside a path": tar_gz(file("a/../../escaped.txt")),
    "absolute path": tar_gz(file("/tmp/absolute.txt")),
    "symlink escape": tar_gz(link("evil", "../../outside")),
    "absolute symlink": tar_gz(link("evil", "/etc/passwd")),
    "symlink chain escape": tar_gz(link("a", "."), link("b", "a/a/a/../..")),
    "write through a symlink": tar_gz(link("d", "."), file("d/x")),
    "hardlink escape": tar_gz(link("evil", "../../etc/passwd", hard=True)),
    "hardlink to a symlink": tar_gz(link("s", "x"), link("h", "s", hard=True)),
    "character device": tar_gz(special("null", tarfile.CHRTYPE)),
    "block device": tar_gz(special("sda", tarfile.BLKTYPE)),
    "fifo": tar_gz(special("pipe", tarfile.FIFOTYPE)),
    "duplicate entry": tar_gz(file("x", b"1"), link("x", "y")),
    "not gzip at all": b"this is not an archive",
}
