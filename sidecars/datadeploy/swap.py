"""Versioned data directories and the atomic symlink swap (git-sync style).

Layout under the data root (the volume the app mounts at its data location)::

    <root>/<name>                          symlink -> .versions/<name>/<version>-<random>
    <root>/.versions/<name>/<version>-<random>/       an extracted, verified tree
    <root>/.versions/<name>/<version>-<random>.json   written once the tree is complete

A tree is extracted into a fresh directory; once complete and verified, its ``.json`` is
written (tmp + rename), and only then is it published: a *relative* symlink (the app mounts the
volume elsewhere) is made beside the link and ``os.replace``d over it. rename(2) is atomic, so a
reader resolving ``<root>/<name>`` sees the old tree or the new one, never a mix and never
nothing.

State lives on disk, so a restart resumes: the current version is read from the link; the
link's own mtime is when it was published; the previous tree is the other complete one that
was live most recently (a superseded tree is touched when it is replaced). Crash points:

- during extraction: the directory has no ``.json`` -> removed by :meth:`Store.recover`;
- after the ``.json``, before the rename: a complete, verified, unpublished tree, kept only if it
  is among the two newest (re-requesting it then costs no download);
- a temporary link beside the link -> removed by :meth:`Store.recover`.

Only the current and the previous tree are kept per data set; older ones are removed after
each swap. Readers still inside a removed tree keep their open files (unlink semantics) but
cannot open new paths there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
from pathlib import Path

VERSIONS = ".versions"


@dataclasses.dataclass(frozen=True, slots=True)
class Deployed:
    """A complete tree of one data set."""

    name: str
    version: str
    sha256: str
    path: Path
    """The tree's directory."""
    time: dt.datetime
    """For the current tree: when it was published; for others: when last live or extracted."""


class Store:
    """The data root of one pod."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, name: str) -> Path:
        return self.root / VERSIONS / name

    def new_tree(self, name: str, version: str) -> Path:
        """A fresh, not yet existing directory for extracting ``version`` of ``name``."""
        self._dir(name).mkdir(parents=True, exist_ok=True)
        return self._dir(name) / f"{version}-{secrets.token_hex(4)}"

    def _read(self, name: str, tree: Path, time: dt.datetime | None = None) -> Deployed | None:
        try:
            meta = json.loads(tree.with_name(tree.name + ".json").read_text())
            if not tree.is_dir() or tree.is_symlink():
                return None
            when = time or dt.datetime.fromtimestamp(tree.stat().st_mtime, dt.UTC)
            return Deployed(name, str(meta["version"]), str(meta["sha256"]), tree, when)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def current(self, name: str) -> Deployed | None:
        """The published tree of ``name``, read from the link, or None."""
        link = self.root / name
        try:
            target = os.readlink(link)
            published = dt.datetime.fromtimestamp(os.lstat(link).st_mtime, dt.UTC)
        except OSError:
            return None
        tree = (self.root / target)
        if tree.parent != self._dir(name):
            return None
        return self._read(name, tree, published)

    def trees(self, name: str) -> list[Deployed]:
        """Complete trees of ``name``, newest first (the current one included)."""
        try:
            entries = list(self._dir(name).iterdir())
        except FileNotFoundError:
            return []
        found = [d for e in entries if not _is_meta(e) and (d := self._read(name, e)) is not None]
        return sorted(found, key=lambda d: d.time, reverse=True)

    def find(self, name: str, version: str, sha256: str) -> Deployed | None:
        """A complete tree of exactly this version and hash (instant rollback, no download)."""
        return next((d for d in self.trees(name) if d.version == version and d.sha256 == sha256), None)

    def complete(self, name: str, tree: Path, version: str, sha256: str) -> None:
        """Mark an extracted, verified tree complete (before it may be published)."""
        meta = tree.with_name(tree.name + ".json")
        tmp = meta.with_name(f".{meta.name}.tmp")
        tmp.write_text(json.dumps({"name": name, "version": version, "sha256": sha256}))
        os.replace(tmp, meta)

    def publish(self, name: str, tree: Path) -> Deployed:
        """Swap ``<root>/<name>`` to ``tree`` atomically, then prune; return the new current tree."""
        link = self.root / name
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
        old = self.current(name)
        tmp = self.root / f".{name}.link-{secrets.token_hex(4)}"
        os.symlink(os.path.relpath(tree, self.root), tmp)
        try:
            os.replace(tmp, link)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)
        if old is not None and old.path != tree:
            os.utime(old.path)  # it was live until now: that makes it the previous tree
        self.prune(name)
        current = self.current(name)
        if current is None:
            raise RuntimeError(f"{link} does not resolve to {tree} after publishing")
        return current

    def prune(self, name: str) -> None:
        """Keep the current tree and the newest other complete one; remove everything else."""
        current = self.current(name)
        keep = {current.path} if current else set()
        others = [d for d in self.trees(name) if current is None or d.path != current.path]
        keep.update(d.path for d in others[:1])
        try:
            entries = list(self._dir(name).iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            tree = entry.with_name(entry.name[:-5]) if _is_meta(entry) else entry
            if tree not in keep:
                _remove(entry)

    def recover(self) -> None:
        """Remove crash leftovers: temporary links, incomplete trees, half-written metadata."""
        for entry in self.root.glob(".*.link-*"):
            entry.unlink(missing_ok=True)
        base = self.root / VERSIONS
        for directory in base.iterdir() if base.is_dir() else ():
            for entry in directory.iterdir():
                half_written = entry.name.startswith(".")
                incomplete = not _is_meta(entry) and not entry.with_name(entry.name + ".json").exists()
                if half_written or incomplete:
                    _remove(entry)
            self.prune(directory.name)


def _is_meta(path: Path) -> bool:
    return path.name.endswith(".json")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
