"""The repository's state on disk: content-addressed archives and one JSON manifest per source.

::

    <data-dir>/archives/<sha256>.tar.gz      immutable; shared when two versions have the same bytes
    <data-dir>/manifests/<source>.json       versions, lastKnownGood, lastOrigin ('/' in names -> '~')
    <data-dir>/tmp/                          archives being packed (emptied at start)
    <data-dir>/work/<source>/                git working copies, HTTP downloads

A version is packed once: into ``tmp/``, then renamed to its hash (after the file is fsynced),
and only then added to the manifest, which is replaced atomically. A crash leaves at worst an
unreferenced archive, removed by the next garbage collection. Retention keeps the newest
``keep`` versions plus every last known good (the source's and each namespace's); archives that
no version references are deleted.
All changes go through one lock; readers get immutable snapshots.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from autocrane import manifests, untrusted
from sidecars import archives
from sidecars.datarepo import sources

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Store:
    def __init__(self, root: Path, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.root, self.clock = root, clock
        self.archives, self.manifest_dir, self.tmp = root / "archives", root / "manifests", root / "tmp"
        for directory in (self.archives, self.manifest_dir, self.tmp, root / "work"):
            directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._manifests: dict[str, manifests.SourceManifest] = {}
        self._origins: dict[str, dict[str, str]] = {}
        for path in sorted(self.manifest_dir.glob("*.json")):
            data = json.loads(path.read_text())
            manifest = manifests.SourceManifest.from_json(data, str(path))
            self._manifests[manifest.source] = manifest
            self._origins[manifest.source] = {str(k): str(v) for k, v in (data.get("lastOrigin") or {}).items()}

    @staticmethod
    def _file_name(source: str) -> str:
        return source.replace("/", "~")

    def work(self, source: str) -> Path:
        return self.root / "work" / self._file_name(source)

    def archive(self, sha256: str) -> Path:
        return self.archives / f"{manifests.check_sha256(sha256)}.tar.gz"

    def manifest(self, source: str) -> manifests.SourceManifest | None:
        return self._manifests.get(source)

    def all(self) -> dict[str, manifests.SourceManifest]:
        return dict(self._manifests)

    def last_origin(self, source: str) -> dict[str, str]:
        return dict(self._origins.get(source, {}))

    def add(self, source: str, snapshot: sources.Snapshot, keep: int) -> manifests.Version | None:
        """Pack ``snapshot`` and add it as a new version, unless its content equals the newest one."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="pack-", suffix=".tar.gz")
        try:
            with os.fdopen(fd, "wb") as out:
                sha, size = archives.pack(snapshot.tree, out, snapshot.exclude)
                out.flush()
                os.fsync(out.fileno())
            with self._lock:
                current = self._manifests.get(source) or manifests.SourceManifest(source)
                self._origins[source] = dict(snapshot.origin)
                if current.latest is not None and current.latest.sha256 == sha:
                    self._write(current)
                    return None
                final = self.archive(sha)
                if final.exists():
                    os.unlink(name)
                else:
                    os.replace(name, final)
                created = self.clock()
                existing = {v.version for v in current.versions}
                while (version_id := manifests.version_id(created, sha)) in existing:
                    created += dt.timedelta(seconds=1)
                version = manifests.Version(version_id, sha, size, created, dict(snapshot.origin))
                versions = (*current.versions, version)
                lkg = current.last_known_good or version.version
                kept = _retain(versions, keep, {lkg, *current.namespaces.values()})
                self._write(manifests.SourceManifest(source, kept, lkg, current.namespaces))
                self._collect()
                return version
        finally:
            if os.path.exists(name):
                os.unlink(name)

    def set_last_known_good(self, source: str, version: str, namespace: str | None = None) -> manifests.SourceManifest:
        """Set the source's last known good, or (``namespace``) that namespace's rollout's.

        A namespace's also becomes the source's when it is newer: the source's is what namespaces
        without one of their own fall back to, the newest version a rollout completed.
        """
        with self._lock:
            current = self._manifests.get(source)
            if current is None or current.find(version) is None:
                raise KeyError(f"source {untrusted.shown(source)} has no version {version!r}")
            if namespace is None:
                updated = dataclasses.replace(current, last_known_good=version)
            else:
                lkg = version if current.newer(version, current.last_known_good) else current.last_known_good
                updated = dataclasses.replace(current, last_known_good=lkg,
                                              namespaces={**current.namespaces, namespace: version})
            self._write(updated)
            return updated

    def _write(self, manifest: manifests.SourceManifest) -> None:
        path = self.manifest_dir / f"{self._file_name(manifest.source)}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        body = manifest.to_json() | {"lastOrigin": self._origins.get(manifest.source, {})}
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, path)
        self._manifests[manifest.source] = manifest

    def _collect(self) -> None:
        """Delete archives that no version of any source references (call with the lock held)."""
        used = {f"{v.sha256}.tar.gz" for m in self._manifests.values() for v in m.versions}
        for path in self.archives.iterdir():
            if path.name not in used:
                log.info("removing unreferenced archive %s", path.name)
                path.unlink(missing_ok=True)


def _retain(versions: tuple[manifests.Version, ...], keep: int, lkgs: set[str]) -> tuple[manifests.Version, ...]:
    newest = {v.version for v in versions[-keep:]}
    return tuple(v for v in versions if v.version in newest or v.version in lkgs)
