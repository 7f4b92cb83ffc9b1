"""Data archives: deterministic packing (data repository) and hostile-safe extraction (datadeployer).

Format: a tar (PAX) compressed with gzip. gzip and tar are in the standard library and every
``tar -xz`` reads them; zstd would decompress faster but needs a third-party package in every
pod, and gzip at level 6 is not what limits a sync (see docs/data-plane.md).

Packing is deterministic: entries sorted by path, mtime 0, uid/gid 0 and no owner names, modes
reduced to 0644/0755, and no timestamp or file name in the gzip header. The same tree gives the
same bytes and so the same sha256, which is how the repository notices that nothing changed.

Extraction trusts nothing. It reads the archive as a stream (no seeking, so it also works while
the archive is still arriving) into a directory that must not exist yet, and checks every entry
before writing it: no absolute path, no ``..``, no duplicate, only regular files, directories,
symlinks and hardlinks (no devices, fifos...), limits on entry count, entry size and total size.
Nothing is ever written through a symlink: every parent of an entry must be a directory that
this extraction created. Hardlinks may only point at regular files already extracted. Symlink
targets must be relative, and once the tree is complete each symlink is resolved on disk and
must stay inside it (a chain like ``a -> .``, ``b -> a/a/../..`` is caught here). Any violation
raises :class:`ArchiveError` naming the entry; the caller removes the directory.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, BinaryIO, Literal

from autocrane import errors

CHUNK = 1 << 20


class ArchiveError(errors.AutocraneError, ValueError):
    """An archive is corrupt, truncated or hostile, or a tree cannot be packed."""

    def __init__(self, message: str, entry: str | None = None) -> None:
        super().__init__(f"entry {entry!r}: {message}" if entry is not None else message)
        self.entry = entry


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """What one archive may contain."""

    max_entries: int = 1_000_000
    """Entries of any kind."""
    max_entry_bytes: int = 64 << 30
    """Size of one file."""
    max_total_bytes: int = 256 << 30
    """Sum of all file sizes."""


def _clean_name(raw: str) -> str:
    """The normalised relative path of an entry, or raise: absolute, ``..``, NUL, empty."""
    if "\x00" in raw:
        raise ArchiveError("NUL byte in name", raw)
    if raw.startswith("/"):
        raise ArchiveError("absolute path", raw)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError("'..' in path", raw)
    return "/".join(parts)


def _check_symlink_target(name: str, target: str) -> None:
    if not target or "\x00" in target:
        raise ArchiveError("empty or NUL symlink target", name)
    if target.startswith("/"):
        raise ArchiveError(f"symlink to absolute path {target!r}", name)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(f"symlink {target!r} escapes the target directory", name)


def extract(fileobj: IO[bytes], dest: Path, limits: Limits | None = None, mode: Literal["r|gz", "r|*"] = "r|gz") -> int:
    """Extract the ``.tar.gz`` stream ``fileobj`` into the new directory ``dest``; return the file bytes written.

    ``dest`` must not exist; its parent must. On error ``dest`` is left for the caller to remove.
    ``mode`` ``"r|*"`` also accepts plain, bzip2 and xz tars (the repository's HTTP sources).
    """
    limits = limits or Limits()
    dest.mkdir(mode=0o755)
    root = str(dest)
    kinds: dict[str, str] = {"": "dir"}  # relative path -> "dir" | "file" | "link"
    symlinks: list[str] = []
    total = 0
    try:
        with tarfile.open(fileobj=fileobj, mode=mode) as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_entries:
                    raise ArchiveError(f"more than {limits.max_entries} entries", member.name)
                name = _clean_name(member.name)
                if not name:
                    continue  # "." / "./": the target directory itself
                if name in kinds and not (member.isdir() and kinds[name] == "dir"):
                    raise ArchiveError("duplicate entry", member.name)
                parent = posixpath.dirname(name)
                _make_parents(root, parent, kinds, member.name)
                path = os.path.join(root, name)
                if member.isdir():
                    if name not in kinds:
                        os.mkdir(path, 0o755)
                        kinds[name] = "dir"
                elif member.isfile():
                    if member.size > limits.max_entry_bytes:
                        raise ArchiveError(f"{member.size} bytes is over the {limits.max_entry_bytes} limit", name)
                    if total + member.size > limits.max_total_bytes:
                        raise ArchiveError(f"archive expands past the {limits.max_total_bytes} byte limit", name)
                    source = tar.extractfile(member)
                    if source is None:  # tarfile gives a regular file's data, always
                        raise ArchiveError("a regular file without data", name)
                    total += _write_file(source, path, member, name)
                    kinds[name] = "file"
                elif member.issym():
                    _check_symlink_target(name, member.linkname)
                    os.symlink(member.linkname, path)
                    kinds[name] = "link"
                    symlinks.append(name)
                elif member.islnk():
                    target = _clean_name(member.linkname)
                    if kinds.get(target) != "file":
                        raise ArchiveError(f"hardlink to {member.linkname!r}, not an extracted regular file", name)
                    os.link(os.path.join(root, target), path, follow_symlinks=False)
                    kinds[name] = "file"
                else:
                    raise ArchiveError(f"unsupported entry type {member.type!r} (device, fifo...)", name)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ArchiveError(f"corrupt or truncated archive: {error}") from error
    real_root = os.path.realpath(root)
    for name in symlinks:
        resolved = os.path.realpath(os.path.join(root, name))
        if resolved != real_root and not resolved.startswith(real_root + os.sep):
            raise ArchiveError("symlink resolves outside the target directory", name)
    return total


def _make_parents(root: str, parent: str, kinds: dict[str, str], entry: str) -> None:
    """Create the missing parents of an entry; every existing one must be a directory we made."""
    if parent in kinds:
        if kinds[parent] != "dir":
            raise ArchiveError(f"parent {parent!r} is not a directory of this archive", entry)
        return
    _make_parents(root, posixpath.dirname(parent), kinds, entry)
    os.mkdir(os.path.join(root, parent), 0o755)
    kinds[parent] = "dir"


def _write_file(source: IO[bytes], path: str, member: tarfile.TarInfo, name: str) -> int:
    mode = 0o755 if member.mode & 0o111 else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > member.size:
                raise ArchiveError("more data than the header declares", name)
            out.write(chunk)
    if written != member.size:
        raise ArchiveError("truncated entry", name)
    return written


def _tree(root: Path, exclude: Iterable[str]) -> list[str]:
    """Relative paths under ``root``, sorted, without the excluded top-level names."""
    skip = set(exclude)
    found: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(directory, root)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.extend(prefix + d for d in dirnames)
        found.extend(prefix + f for f in filenames)
    return sorted(found)


def pack(root: Path, out: BinaryIO, exclude: Iterable[str] = ()) -> tuple[str, int]:
    """Write ``root``'s tree as a deterministic ``.tar.gz`` to ``out``; return (sha256 hex, size)."""
    hashing = _HashingWriter(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in _tree(root, exclude):
            path = root / name
            info = os.lstat(path)
            entry = tarfile.TarInfo(name)
            entry.mtime, entry.uid, entry.gid, entry.uname, entry.gname = 0, 0, 0, "", ""
            if stat.S_ISDIR(info.st_mode):
                entry.type, entry.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(entry)
            elif stat.S_ISREG(info.st_mode):
                entry.mode = 0o755 if info.st_mode & 0o111 else 0o644
                entry.size = info.st_size
                with open(path, "rb") as data:
                    tar.addfile(entry, data)
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                _check_symlink_target(name, target)
                resolved = os.path.realpath(path)
                real_root = os.path.realpath(root)
                if resolved != real_root and not resolved.startswith(real_root + os.sep):
                    raise ArchiveError("symlink resolves outside the tree", name)
                entry.type, entry.linkname, entry.mode = tarfile.SYMTYPE, target, 0o777
                tar.addfile(entry)
            else:
                raise ArchiveError("not a file, directory or symlink", name)
    return hashing.hexdigest(), hashing.size


class _HashingWriter:
    """A write-only file that hashes and counts what passes through to ``out`` (gzip's ``fileobj``)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out, self._hash, self.size = out, hashlib.sha256(), 0

    def flush(self) -> None:
        self._out.flush()

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
