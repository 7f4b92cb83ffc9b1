"""Slim records of the Deployments and ReplicaSets of staged rollouts, from raw JSON (pure).

Like :mod:`controller.pods`: only the fields a decision reads, decoded once, tolerant of
anything missing (a field the API server did not fill yet reads as zero).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from autocrane import approllouts, untrusted


@dataclasses.dataclass(frozen=True, slots=True)
class Deployment:
    """One Deployment of a group, as observed."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    group: str
    stage: int
    release: str | None
    """The ``rollout.autocrane.io/release`` annotation, if any."""
    generation: int
    observed_generation: int
    replicas: int
    """``spec.replicas`` (1 when absent, as the API server defaults it)."""
    status_replicas: int
    """Pods of every revision."""
    updated: int
    available: int
    paused: bool
    template: Mapping[str, Any]
    template_hash: str
    images: tuple[str, ...]
    deadline_exceeded: bool
    """The Deployment controller reported ``ProgressDeadlineExceeded``."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def rolled_out(self) -> bool:
        """Its current template runs everywhere: generation observed, updated = available = replicas, no old pods."""
        return (self.observed_generation >= self.generation and self.updated == self.replicas
                and self.available >= self.replicas and self.status_replicas == self.updated)

    @property
    def release_identity(self) -> str:
        """What ties this template to the same release in other stages: the annotation, else the images."""
        return f"release:{self.release}" if self.release else "images:" + ",".join(self.images)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaSet:
    """One ReplicaSet owned by a group's Deployment."""

    namespace: str
    name: str
    owner_uid: str
    """uid of the controlling Deployment."""
    template_hash: str
    """:func:`autocrane.approllouts.template_hash` of its template: which release its pods run."""


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def deployment_from_json(raw: Mapping[str, Any]) -> Deployment | None:
    """The record of a Deployment in a group, or None when it is in none (or its stage label is malformed)."""
    meta, spec, status = raw.get("metadata") or {}, raw.get("spec") or {}, raw.get("status") or {}
    labels = meta.get("labels") or {}
    group, stage = approllouts.group_of(labels), approllouts.stage_of(labels)
    if group is None or stage is None:
        return None
    template = untrusted.mapping(spec.get("template"))
    release = (meta.get("annotations") or {}).get(approllouts.RELEASE_ANNOTATION)
    conditions = status.get("conditions") or ()
    return Deployment(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")), group=group, stage=stage,
        release=release[:253] if isinstance(release, str) and release else None,
        generation=_int(meta.get("generation")), observed_generation=_int(status.get("observedGeneration")),
        replicas=_int(spec.get("replicas"), 1), status_replicas=_int(status.get("replicas")),
        updated=_int(status.get("updatedReplicas")), available=_int(status.get("availableReplicas")),
        paused=spec.get("paused") is True, template=template, template_hash=approllouts.template_hash(template),
        images=approllouts.images(template),
        deadline_exceeded=any(isinstance(c, Mapping) and c.get("type") == "Progressing"
                              and c.get("reason") == "ProgressDeadlineExceeded" for c in conditions))


def replica_set_from_json(raw: Mapping[str, Any]) -> ReplicaSet | None:
    """The record of a ReplicaSet whose controller is a Deployment, else None."""
    meta, spec = raw.get("metadata") or {}, raw.get("spec") or {}
    owner = next((ref for ref in meta.get("ownerReferences") or ()
                  if isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind") == "Deployment"), None)
    if owner is None:
        return None
    template = untrusted.mapping(spec.get("template"))
    return ReplicaSet(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
                      owner_uid=str(owner.get("uid", "")), template_hash=approllouts.template_hash(template))
