"""Talking to the data repository: manifests, and resumable, verified archive downloads.

Stdlib HTTP (``urllib``): the datadeployer runs in every opted-in pod, so it carries no client
library it does not need. Blocking calls; the caller runs them in a thread.

A download goes to ``<sha256>.part`` and survives failures: the next attempt (or the next
process) asks for the rest with ``Range: bytes=<have>-``. The hash is computed as bytes arrive
(and over the kept prefix on resume), and the result must have exactly the manifest's size
and sha256, or it is deleted. Transient failures (connection refused or dropped, timeouts,
5xx, 429) are retried with exponential backoff; a hash or size mismatch and a full disk are
not (retrying cannot fix them; the sync loop tries again later from scratch).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from autocrane import backoff, errors, manifests
from sidecars import archives
from sidecars.datadeploy import streaming

log = logging.getLogger(__name__)


class FetchError(errors.AutocraneError):
    """The repository could not be reached or did not deliver."""


class IntegrityError(FetchError):
    """What arrived is not what the manifest describes (size or sha256)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Repository:
    """The data repository's HTTP API."""

    url: str
    """Base URL, e.g. ``http://datarepository.autocrane-system``."""
    token: str | None = None
    """Bearer token, when the repository requires one."""
    timeout: float = 30.0
    """Seconds without progress before a request fails."""

    def _open(self, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=self.timeout)
        return response

    def source(self, name: str) -> manifests.SourceManifest:
        """One source's manifest."""
        try:
            with self._open(f"/v1/sources/{urllib.parse.quote(name)}") as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            error.close()  # it holds the answer's connection
            raise FetchError(f"repository {self.url}: source {name!r}: HTTP {error.code}") from None
        except (OSError, http.client.HTTPException) as error:
            raise FetchError(f"repository {self.url} unreachable: {error}") from error
        try:
            return manifests.SourceManifest.from_json(_json(body), f"source {name}")
        except manifests.ManifestError as error:
            raise FetchError(f"repository {self.url}: {error}") from None

    def archive_path(self, sha256: str) -> str:
        return f"/v1/archives/{manifests.check_sha256(sha256)}.tar.gz"


def _json(body: bytes) -> object:
    import json

    try:
        return json.loads(body)
    except ValueError as error:
        raise manifests.ManifestError(f"not JSON: {error}") from None


DOWNLOAD_BACKOFF = backoff.Backoff(first=0.5, cap=30.0)


@dataclasses.dataclass(slots=True)
class Retry:
    """How often and how patiently to retry transient failures."""

    attempts: int = 6
    delays: backoff.Backoff = DOWNLOAD_BACKOFF
    sleep: Callable[[float], None] = time.sleep


def download(repo: Repository, version: manifests.Version, part: Path, retry: Retry | None = None,
             label: str = "", progress_every: float = 5.0, progress: streaming.Progress | None = None) -> Path:
    """Download ``version``'s archive to ``part``, resuming it; return it once size and sha256 match.

    ``progress``, if given, is told how many bytes the file holds after every write, and when it
    starts over, so a :class:`streaming.Follower` can read the file while it grows.
    """
    retry = retry or Retry()
    label = label or version.version
    digest, hashed = hashlib.sha256(), 0
    started, last_log = time.monotonic(), time.monotonic()
    for attempt in range(retry.attempts):
        have = part.stat().st_size if part.exists() else 0
        if have > version.size:
            part.unlink()
            have = 0
            if progress:
                progress.restart()
        if have != hashed:
            digest, hashed = _hash_prefix(part, have), have
        if progress:
            progress.advance(have)
        if have == version.size:
            break
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with repo._open(repo.archive_path(version.sha256), headers) as response:
                if response.status == 200 and have:
                    log.info("%s: repository ignored Range; starting over", label)
                    part.unlink()
                    digest, hashed, have = hashlib.sha256(), 0, 0
                    if progress:
                        progress.restart()
                elif response.status == 206 and not (response.headers.get("Content-Range") or "").startswith(
                        f"bytes {have}-"):
                    raise FetchError(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
                with open(part, "ab", buffering=0) as out:  # unbuffered: a follower reads what we report
                    while chunk := response.read(archives.CHUNK):
                        hashed += len(chunk)
                        if hashed > version.size:
                            part.unlink()
                            raise IntegrityError(f"{label}: archive is larger than the manifest's {version.size} bytes")
                        out.write(chunk)
                        digest.update(chunk)
                        if progress:
                            progress.advance(hashed)
                        if time.monotonic() - last_log >= progress_every:
                            last_log = time.monotonic()
                            _progress(label, hashed, version.size, started)
            if hashed == version.size:
                break
            raise http.client.IncompleteRead(b"", version.size - hashed)
        except urllib.error.HTTPError as error:
            error.close()  # it holds the answer's connection
            if error.code == 416:
                part.unlink(missing_ok=True)
                raise IntegrityError(f"{label}: archive shorter than the manifest's {version.size} bytes") from None
            if error.code not in (408, 429) and error.code < 500:
                raise FetchError(f"{label}: repository answered HTTP {error.code} for the archive") from None
            problem: str = f"HTTP {error.code}"
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                part.unlink(missing_ok=True)
                raise FetchError(f"{label}: disk full while downloading ({error.strerror})") from error
            problem = str(error) or type(error).__name__
        except http.client.HTTPException as error:
            problem = f"connection dropped ({type(error).__name__})"
        have_now = part.stat().st_size if part.exists() else 0
        if attempt + 1 < retry.attempts:
            log.warning("%s: download interrupted at %d of %d bytes: %s; retrying in %.1fs",
                        label, have_now, version.size, problem, retry.delays.delay(attempt + 1))
            retry.sleep(retry.delays.delay(attempt + 1))
        else:
            raise FetchError(f"{label}: download failed after {retry.attempts} attempts: {problem}")
    got = digest.hexdigest()
    if got != version.sha256:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{label}: sha256 mismatch: manifest says {version.sha256}, archive is {got}")
    _progress(label, hashed, version.size, started)
    return part


def _hash_prefix(path: Path, size: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    if size:
        with open(path, "rb") as data:
            left = size
            while left and (chunk := data.read(min(archives.CHUNK, left))):
                digest.update(chunk)
                left -= len(chunk)
    return digest


def _progress(label: str, have: int, size: int, started: float) -> None:
    elapsed = max(time.monotonic() - started, 1e-6)
    log.info("%s: %.1f of %.1f MiB (%d%%), %.1f MiB/s", label, have / 2**20, size / 2**20,
             100 * have // max(size, 1), have / 2**20 / elapsed)
