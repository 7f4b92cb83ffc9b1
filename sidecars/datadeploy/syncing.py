"""One sync of one data set: look up, download, verify, extract, publish (blocking).

The failure rule is absolute: the live tree is replaced only by a tree that was downloaded in
full, matched the manifest's size and sha256 (and the request's sha256, when given), and was
extracted completely with every entry checked. Anything else (a hostile or corrupt archive, a
mismatch, a truncated download, an unreachable repository, a full disk) raises
:class:`SyncError`, removes what this attempt wrote, and leaves ``<root>/<name>`` untouched.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import shutil
import threading
import time
from pathlib import Path

from autocrane import errors, manifests
from sidecars import archives
from sidecars.datadeploy import fetching, streaming, swap

log = logging.getLogger(__name__)
STALE_PART_SECONDS = 3600


class SyncError(errors.AutocraneError):
    """A data set could not be brought to the wanted version; the live tree is unchanged."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    root: Path
    repository: fetching.Repository
    limits: archives.Limits = dataclasses.field(default_factory=archives.Limits)
    retry: fetching.Retry = dataclasses.field(default_factory=fetching.Retry)
    namespace: str | None = None
    """The pod's namespace: its rollout's last known good is the one to fall back to."""

    @property
    def downloads(self) -> Path:
        return self.root / ".downloads"


def last_known_good(settings: Settings, source: str) -> manifests.DataRequest:
    """The last-known-good version of ``source`` for this pod's namespace (else the source's), as a request."""
    try:
        manifest = settings.repository.source(source).for_namespace(settings.namespace)
    except fetching.FetchError as error:
        raise SyncError(f"cannot learn the last known good version: {error}") from error
    version = manifest.find(manifest.last_known_good) if manifest.last_known_good else None
    if version is None:
        raise SyncError(f"source {source!r} has no last-known-good version in the repository's manifest")
    return manifests.DataRequest(version.version, version.sha256)


def is_current(store: swap.Store, name: str, request: manifests.DataRequest) -> swap.Deployed | None:
    current = store.current(name)
    if current and current.version == request.version and request.sha256 in (None, current.sha256):
        return current
    return None


def sync(settings: Settings, store: swap.Store, name: str, source: str,
         request: manifests.DataRequest) -> tuple[swap.Deployed, bool]:
    """Make ``<root>/<name>`` the requested version; return (current tree, whether it changed)."""
    if (current := is_current(store, name, request)) is not None:
        return current, False
    label = f"{name}@{request.version}"
    try:
        manifest = settings.repository.source(source)
    except fetching.FetchError as error:
        raise SyncError(str(error)) from error
    version = manifest.find(request.version)
    if version is None:
        raise SyncError(f"{label}: version not in the manifest of source {source!r}")
    if request.sha256 is not None and request.sha256 != version.sha256:
        raise SyncError(f"{label}: requested sha256 {request.sha256} differs from the manifest's {version.sha256}")
    kept = store.find(name, version.version, version.sha256)
    if kept is not None:
        log.info("%s: already on disk, publishing without download", label)
        return store.publish(name, kept.path), True
    settings.downloads.mkdir(parents=True, exist_ok=True)
    _drop_stale_parts(settings.downloads)
    part = settings.downloads / f"{version.sha256}.part"
    tree = store.new_tree(name, version.version)
    started = time.monotonic()
    try:
        size = _fetch_and_extract(settings, version, part, tree, label)
        store.complete(name, tree, version.version, version.sha256)
    except archives.ArchiveError as error:
        shutil.rmtree(tree, ignore_errors=True)
        raise SyncError(f"{label}: refused archive: {error}") from error
    except fetching.FetchError as error:
        shutil.rmtree(tree, ignore_errors=True)
        raise SyncError(str(error)) from error
    except OSError as error:
        shutil.rmtree(tree, ignore_errors=True)
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise SyncError(f"{label}: {'disk full' if full else 'cannot extract'}: {error}") from error
    except BaseException:
        shutil.rmtree(tree, ignore_errors=True)
        raise
    finally:
        part.unlink(missing_ok=True)
    log.info("%s: extracted %.1f MiB in %.2fs", label, size / 2**20, time.monotonic() - started)
    try:
        deployed = store.publish(name, tree)
    except OSError as error:
        raise SyncError(f"{label}: cannot publish: {error}") from error
    log.info("%s: live at %s", label, store.root / name)
    return deployed, True


def _fetch_and_extract(settings: Settings, version: manifests.Version, part: Path, tree: Path, label: str) -> int:
    """Download ``part`` and extract it into ``tree`` at the same time; return the bytes extracted.

    Returns only once the download is complete and verified; raises FetchError (download) or
    ArchiveError (content). If the download restarted under the reader, extract once more from
    the finished file.
    """
    progress = streaming.Progress()
    part.touch()
    follower = streaming.Follower(part, progress)
    failure: list[BaseException] = []

    def fetch() -> None:
        try:
            fetching.download(settings.repository, version, part, settings.retry, label, progress=progress)
        except BaseException as error:
            failure.append(error)
        finally:
            progress.finish(failed=bool(failure))

    thread = threading.Thread(target=fetch, name=f"download-{label}", daemon=True)
    thread.start()
    try:
        with io.BufferedReader(follower, archives.CHUNK) as stream:
            size = archives.extract(stream, tree, settings.limits)
    except streaming.Restarted:
        size = -1
    except BaseException:
        progress.cancel()
        thread.join()
        if failure and not isinstance(failure[0], streaming.Cancelled):
            _reraise(failure[0], label)  # the download's failure is the cause (e.g. a truncated stream)
        raise
    thread.join()
    if failure:
        _reraise(failure[0], label)
    if size < 0:  # the download started over under the reader: extract the verified file again
        shutil.rmtree(tree)
        with open(part, "rb") as data:
            size = archives.extract(data, tree, settings.limits)
    return size


def _reraise(error: BaseException, label: str) -> None:
    raise error if isinstance(error, fetching.FetchError | OSError) else fetching.FetchError(f"{label}: {error}")


def _drop_stale_parts(downloads: Path) -> None:
    """Remove partial downloads nobody has touched for an hour (a superseded request's)."""
    cutoff = time.time() - STALE_PART_SECONDS
    for part in downloads.glob("*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
        except OSError:
            pass
