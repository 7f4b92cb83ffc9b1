"""Slim pod records: the few fields the controller decides on, decoded from raw pod JSON (pure).

A full pod is 5-30 KiB of JSON and ~33 KiB as Python dicts; the controller keeps 10,000 of them
in memory, so the informer turns each one into a :class:`Pod` of roughly 1-2 KiB right away and
drops the rest. Only ``*.autocrane.io`` annotations are kept (plus the mirror-pod marker), only
the health label, and only the controlling owner reference.

Tests build records from plain dicts with :func:`from_json`, the same path the informer takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from autocrane import bodies, keys, untrusted


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """The controlling owner reference of a pod."""

    kind: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pod:
    """What the controller needs to know about one pod."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    created: float
    """``metadata.creationTimestamp`` as POSIX seconds (0 when absent)."""
    annotations: Mapping[str, str]
    """Only ``*.autocrane.io`` keys and the mirror-pod marker."""
    health_label: str | None
    """The current ``status.autocrane.io/health`` label, if any."""
    owner: Owner | None
    """The controlling owner (``controller: true``), None for a bare pod."""
    node: str
    pod_ip: str
    phase: str
    ready: bool
    terminating: bool
    """``metadata.deletionTimestamp`` is set."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def mirror(self) -> bool:
        return keys.MIRROR_POD in self.annotations

    @property
    def opted_out(self) -> bool:
        return self.annotations.get(keys.EVICTION_OPT_OUT, "").strip().lower() == "true"

    @property
    def probeable(self) -> bool:
        """Running, not terminating, with an IP (readiness is not required: see docs/controller.md)."""
        return self.phase == "Running" and not self.terminating and bool(self.pod_ip)

    def probes(self) -> dict[str, str]:
        """``probe.autocrane.io/<name>`` annotations by name."""
        prefix = keys.PROBE_PREFIX
        return {key[len(prefix):]: value for key, value in self.annotations.items() if key.startswith(prefix)}

    def with_annotations(self, changes: Mapping[str, str | None], health_label: str | None) -> Pod:
        """A copy with a merge patch's annotation changes applied (None deletes) and a new label."""
        merged = {k: v for k, v in {**self.annotations, **changes}.items() if v is not None}
        return dataclasses.replace(self, annotations=merged, health_label=health_label)


def parse_time(text: str | None) -> float:
    """An RFC3339 API timestamp as POSIX seconds; 0 for None or garbage."""
    return untrusted.timestamp(text) or 0.0


def _keep_annotation(key: str) -> bool:
    return key == keys.MIRROR_POD or keys.is_autocrane_key(key)


def _ready(status: bodies.PodStatus) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def _owner(metadata: bodies.ObjectMeta) -> Owner | None:
    for ref in metadata.get("ownerReferences") or ():
        if ref.get("controller"):
            return Owner(kind=str(ref.get("kind", "")), name=str(ref.get("name", "")), uid=str(ref.get("uid", "")))
    return None


def from_json(raw: bodies.Pod) -> Pod:
    """Decode one pod (a dict from the API, or a hand-written one in a test)."""
    metadata: bodies.ObjectMeta = raw.get("metadata") or {}
    status: bodies.PodStatus = raw.get("status") or {}
    spec: bodies.PodSpec = raw.get("spec") or {}
    kept = {k: str(v) for k, v in (metadata.get("annotations") or {}).items() if _keep_annotation(k)}
    labels = metadata.get("labels") or {}
    return Pod(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        created=parse_time(metadata.get("creationTimestamp")),
        annotations=kept,
        health_label=labels.get(keys.HEALTH_LABEL),
        owner=_owner(metadata),
        node=str(spec.get("nodeName") or ""),
        pod_ip=str(status.get("podIP") or ""),
        phase=str(status.get("phase") or ""),
        ready=_ready(status),
        terminating=metadata.get("deletionTimestamp") is not None,
    )
