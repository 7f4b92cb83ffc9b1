"""Data-repository manifests and data-request values (pure).

The data repository describes each source in a manifest: its versions, oldest first, and the
last known good one. The controller reads it to choose versions, the datadeployer to look up a
requested version's archive and sha256. JSON, camelCase::

    {"source": "models",
     "lastKnownGood": "20260102T030405Z-1a2b3c4d5e6f",
     "versions": [{"version": "20260102T030405Z-1a2b3c4d5e6f",
                   "sha256": "<64 lower-case hex>", "size": 1234,
                   "created": "2026-01-02T03:04:05Z",
                   "origin": {"commit": "<sha>"}}]}

The repository-wide manifest is ``{"sources": {"<name>": <source manifest>}}``.

A ``DataRollout`` is per namespace and source, so the last known good is too: the controller
writes its namespace's (``PUT .../last-known-good`` with ``"namespace"``), kept in
``"lastKnownGoodByNamespace": {"<namespace>": "<id>"}`` (absent while empty). ``lastKnownGood``
is the source's own: the first version, then the newest any namespace's rollout completed; a
namespace without an entry of its own falls back to it (:meth:`SourceManifest.for_namespace`).

A version id is ``<creation time>-<first 12 hex of the sha256>``: sortable by time, unique by
content, and safe as a path component. ``lastKnownGood`` is the version a pod falls back to when
no request arrives in time: the first version a source ever had, until the controller sets it
(``PUT /v1/sources/<name>/last-known-good``). No last known good is ever removed by retention.

The controller asks a pod for a version with the annotation
``request.data.autocrane.io/<name>: {"version": "<id>", "sha256": "<hex>"}`` (``sha256``
optional, unknown keys ignored). The datadeployer verifies the archive against the manifest's
sha256 and, when given, the request's too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from autocrane import errors, untrusted

# Checked with fullmatch: ``$`` also matches before a trailing newline, so "v1\n" was a version.
_SEGMENT = r"[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?"
_SOURCE = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
MAX_REQUEST_BYTES = 4096
"""Longest ``request.data.autocrane.io/<name>`` value read (the controller writes about 110 bytes)."""
MAX_REQUEST_DEPTH = 4
"""Deepest JSON nesting in a request value (the controller writes an object of two strings)."""
MAX_MANIFEST_BYTES = 64 << 20
"""Largest repository manifest read (a source with 10 versions is about 3 KiB)."""


class ManifestError(errors.AutocraneError, ValueError):
    """A manifest, request, name or version is malformed; the message says where."""


def check_source(source: object, what: str = "source") -> str:
    """A repository source name: one or more names joined by '/', e.g. ``models/resnet``, at most 253."""
    if not isinstance(source, str) or len(source) > 253 or not _SOURCE.fullmatch(source):
        raise ManifestError(
            f"{what} {untrusted.shown(source)}: expected names of [a-z0-9-_.] joined by '/', like models/resnet")
    return source


def check_version(version: object, what: str = "version") -> str:
    """A version id: safe as a path component (no '/', no leading '.', at most 128 characters)."""
    if not isinstance(version, str) or len(version) > 128 or not _VERSION.fullmatch(version):
        raise ManifestError(
            f"{what} {untrusted.shown(version)}: expected [A-Za-z0-9_.-], starting alphanumeric, at most 128")
    return version


def check_namespace(namespace: object, what: str = "namespace") -> str:
    """A Kubernetes namespace name (an RFC 1123 label)."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ManifestError(f"{what} {untrusted.shown(namespace)}: expected a namespace name ([a-z0-9-], at most 63)")
    return namespace


def check_sha256(value: object, what: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ManifestError(f"{what} {untrusted.shown(value)}: expected 64 lower-case hex digits")
    return value


def version_id(created: dt.datetime, sha256: str) -> str:
    """The id of a version created at ``created`` (aware) with archive hash ``sha256``."""
    return f"{created.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{check_sha256(sha256)[:12]}"


def _time(text: Any, where: str) -> dt.datetime:
    try:
        return untrusted.parse_time(text, what=where)
    except untrusted.UntrustedValueError:
        raise ManifestError(f"{where}: {untrusted.shown(text)} is not an RFC3339 time") from None


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    """One immutable version of a source."""

    version: str
    """Id, see :func:`version_id`."""
    sha256: str
    """Hash of the archive (``.tar.gz``), lower-case hex."""
    size: int
    """Archive size in bytes."""
    created: dt.datetime
    """When the repository packaged it (UTC)."""
    origin: dict[str, str] = dataclasses.field(default_factory=dict)
    """Where it came from: commit, URL and ETag, directory..."""

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256, "size": self.size,
                "created": format_time(self.created), "origin": dict(self.origin)}

    @classmethod
    def from_json(cls, data: Any, where: str = "version") -> Version:
        if not isinstance(data, Mapping):
            raise ManifestError(f"{where}: expected an object")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}.size: {size!r} is not a byte count")
        origin = data.get("origin") or {}
        if not isinstance(origin, Mapping):
            raise ManifestError(f"{where}.origin: expected an object")
        return cls(check_version(data.get("version"), f"{where}.version"),
                   check_sha256(data.get("sha256"), f"{where}.sha256"),
                   size, _time(data.get("created"), f"{where}.created"),
                   {str(k): str(v) for k, v in origin.items()})


@dataclasses.dataclass(frozen=True, slots=True)
class SourceManifest:
    """What the repository holds for one source."""

    source: str
    versions: tuple[Version, ...] = ()
    """Oldest first."""
    last_known_good: str | None = None
    """The source's version to fall back to, if any."""
    namespaces: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Namespace -> the last known good of that namespace's rollout."""

    def find(self, version: str) -> Version | None:
        return next((v for v in self.versions if v.version == version), None)

    def for_namespace(self, namespace: str | None) -> SourceManifest:
        """This manifest as ``namespace``'s rollout sees it: its own last known good, else the source's."""
        if namespace is None or namespace not in self.namespaces:
            return self
        return dataclasses.replace(self, last_known_good=self.namespaces[namespace])

    def newer(self, version: str, than: str | None) -> bool:
        """Whether ``version`` comes after ``than`` in this manifest (anything is newer than a missing one)."""
        order = {v.version: i for i, v in enumerate(self.versions)}
        if version not in order:
            return False
        return than is None or than not in order or order[version] > order[than]

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"source": self.source, "lastKnownGood": self.last_known_good,
                                "versions": [v.to_json() for v in self.versions]}
        if self.namespaces:
            body["lastKnownGoodByNamespace"] = dict(sorted(self.namespaces.items()))
        return body

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> SourceManifest:
        if not isinstance(data, Mapping):
            raise ManifestError(f"{where}: expected an object")
        versions = data.get("versions", [])
        if not isinstance(versions, list):
            raise ManifestError(f"{where}.versions: expected a list")
        lkg = data.get("lastKnownGood")
        if lkg is not None:
            check_version(lkg, f"{where}.lastKnownGood")
        scoped = data.get("lastKnownGoodByNamespace")
        scoped = {} if scoped is None else scoped
        if not isinstance(scoped, Mapping):
            raise ManifestError(f"{where}.lastKnownGoodByNamespace: expected an object")
        namespaces = {check_namespace(ns, f"{where}.lastKnownGoodByNamespace key"):
                      check_version(v, f"{where}.lastKnownGoodByNamespace.{ns}") for ns, v in scoped.items()}
        return cls(check_source(data.get("source"), f"{where}.source"),
                   tuple(Version.from_json(v, f"{where}.versions[{i}]") for i, v in enumerate(versions)), lkg,
                   namespaces)


def parse_manifest(text: str | bytes) -> dict[str, SourceManifest]:
    """The repository-wide manifest: source name -> its manifest."""
    try:
        data = untrusted.json_value(text, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    except untrusted.UntrustedValueError as error:
        raise ManifestError(str(error)) from None
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, dict):
        raise ManifestError("manifest: expected {\"sources\": {...}}")
    return {name: SourceManifest.from_json(body, f"sources.{name}") for name, body in sources.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class DataRequest:
    """The controller's request for one data set of one pod."""

    version: str
    sha256: str | None = None

    def to_annotation(self) -> str:
        body = {"version": self.version} | ({"sha256": self.sha256} if self.sha256 else {})
        return json.dumps(body, separators=(",", ":"))


def parse_request(value: str, key: str = "request") -> DataRequest:
    """Parse a ``request.data.autocrane.io/<name>`` value; errors name ``key``.

    At most :data:`MAX_REQUEST_BYTES` and :data:`MAX_REQUEST_DEPTH` levels: anyone who may
    annotate the pod writes this value, and the standard ``json`` module recursed until
    ``RecursionError`` on a 10,000-level one, which stopped the datadeployer following its pod.
    """
    try:
        data = untrusted.json_value(value, what=key, max_bytes=MAX_REQUEST_BYTES, max_depth=MAX_REQUEST_DEPTH)
    except untrusted.UntrustedValueError:
        data = None
    if not isinstance(data, dict):
        raise ManifestError(f'{key}: {untrusted.shown(value)} is not {{"version": "<id>", "sha256": "<hex>"}}')
    sha = data.get("sha256")
    return DataRequest(check_version(data.get("version"), f"{key}: version"),
                       None if sha is None else check_sha256(sha, f"{key}: sha256"))
