"""Staged application rollouts: labels, the template hash and the ``AppRollout`` object (pure).

The wire contract between the webhook, which holds a Deployment whose new template is not
released yet, and the controller, which releases stages and rolls them back (docs/app-rollouts.md).
Both read the same ``AppRollout`` status, so its encoding lives here, once.

One ``AppRollout`` (``autocrane.io/v1alpha1``) per group and namespace, named after the group.
Its ``spec`` is people's: ``bakeSeconds``, ``progressDeadlineSeconds``, ``maxErrorPods``,
``paused``, and the tokens ``promote``, ``abort``, ``retry``. Its ``status`` is the controller's:
the phase, the current stage and its clock, the tokens seen, and per Deployment the last known
good template (hash *and* a copy), the released hash and the rejected hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from autocrane import keys, untrusted

GROUP_LABEL = keys.ROLLOUT_GROUP_LABEL
"""Deployments with this label form a staged rollout (a label, so the webhook's objectSelector sees it)."""
STAGE_LABEL = keys.ROLLOUT_STAGE_LABEL
"""``"<n>"``: lower stages roll first; absent means 0."""
RELEASE_ANNOTATION = keys.ROLLOUT_RELEASE_ANNOTATION
"""Optional, on the Deployment: ties the pending templates of one release together across stages."""
POD_TEMPLATE_HASH = "pod-template-hash"
"""Added by the Deployment controller to ReplicaSets and pods, never part of a release."""

API_GROUP, VERSION, PLURAL, KIND = "autocrane.io", "v1alpha1", "approllouts", "AppRollout"
API_VERSION = f"{API_GROUP}/{VERSION}"
MAX_REJECTED = 20
"""Rejected template hashes kept per Deployment (oldest dropped first)."""
MAX_STAGE = 1000

DEFAULT_BAKE_SECONDS = 300.0
DEFAULT_PROGRESS_DEADLINE = 600.0

# Phases of a group.
HEALTHY, PROGRESSING, BAKING, ROLLED_BACK, STUCK, PAUSED = (
    "Healthy", "Progressing", "Baking", "RolledBack", "Stuck", "Paused")
PHASES = (HEALTHY, PROGRESSING, BAKING, ROLLED_BACK, STUCK, PAUSED)

_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_HASH = re.compile(r"[0-9a-f]{16}")


def path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{API_GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def template_hash(template: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``template`` as canonical JSON, without ``pod-template-hash``."""
    metadata = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (metadata.get("labels") or {}).items() if k != POD_TEMPLATE_HASH}
    if labels:
        metadata["labels"] = labels
    else:
        metadata.pop("labels", None)
    canonical = {**template, "metadata": metadata} if metadata else {k: v for k, v in template.items()
                                                                      if k != "metadata"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def images(template: Mapping[str, Any]) -> tuple[str, ...]:
    """The images of a pod template's containers and init containers, sorted."""
    spec = template.get("spec") or {}
    found = {str(c.get("image", "")) for key in ("initContainers", "containers")
             for c in spec.get(key) or () if isinstance(c, Mapping)}
    return tuple(sorted(found))


def group_of(labels: Mapping[str, str] | None) -> str | None:
    """The group a Deployment's labels put it in, or None."""
    value = (labels or {}).get(GROUP_LABEL)
    return value if isinstance(value, str) and _LABEL_VALUE.fullmatch(value) else None


def stage_of(labels: Mapping[str, str] | None) -> int | None:
    """The stage label as a number (absent: 0); None when it is not a number from 0 to 1000."""
    value = (labels or {}).get(STAGE_LABEL, "0")
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 4:
        return None
    stage = int(value)
    return stage if stage <= MAX_STAGE else None


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """What people ask of one group (the ``AppRollout`` spec)."""

    bake_seconds: float = DEFAULT_BAKE_SECONDS
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    max_error_pods: int = 0
    """New-revision pods that may be in error without a rollback (a tolerance for flaky watchdogs)."""
    paused: bool = False
    """Release no further stage (rollbacks still happen)."""
    promote: str | None = None
    abort: str | None = None
    retry: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """What the controller remembers of one Deployment of the group."""

    stage: int = 0
    last_known_good: str | None = None
    """Hash of the template that last passed its stage (or was adopted)."""
    last_known_good_template: Mapping[str, Any] | None = None
    """A copy of that template: what a rollback writes back."""
    released: str | None = None
    """Hash of the template the controller let roll out."""
    rejected: tuple[str, ...] = ()
    """Hashes rolled back, oldest first."""

    def settled(self, template: str) -> bool:
        """Whether ``template`` may run without a release: it is the last known good or released."""
        return template in (self.last_known_good, self.released)


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """The controller's memory of one group (the ``AppRollout`` status)."""

    phase: str = HEALTHY
    stage: int | None = None
    """The stage being rolled out, if any."""
    released_at: float | None = None
    """When the current stage was released (POSIX seconds)."""
    rolled_out_at: float | None = None
    """When the current stage was first seen fully rolled out: its bake clock."""
    reason: str = ""
    """A machine-friendly word for the phase (``Watchdog``, ``Deadline``, ``Abort``, ``BaselineFailing``...)."""
    message: str = ""
    observed_promote: str | None = None
    observed_abort: str | None = None
    observed_retry: str | None = None
    deployments: Mapping[str, Record] = dataclasses.field(default_factory=dict)


def _text(value: Any, limit: int = 256) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _number(value: Any, default: float, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        return default
    return float(value)


def spec_from_json(spec: Mapping[str, Any] | None) -> Spec:
    spec = spec if isinstance(spec, Mapping) else {}
    return Spec(bake_seconds=_number(spec.get("bakeSeconds"), DEFAULT_BAKE_SECONDS),
                progress_deadline=_number(spec.get("progressDeadlineSeconds"), DEFAULT_PROGRESS_DEADLINE, 1.0),
                max_error_pods=int(_number(spec.get("maxErrorPods"), 0)),
                paused=spec.get("paused") is True, promote=_text(spec.get("promote")),
                abort=_text(spec.get("abort")), retry=_text(spec.get("retry")))


def _hash(value: Any) -> str | None:
    return value if isinstance(value, str) and _HASH.fullmatch(value) else None


def _record(raw: Any) -> Record | None:
    if not isinstance(raw, Mapping):
        return None
    lkg = untrusted.mapping(raw.get("lastKnownGood"))
    template = lkg.get("template")
    stage = raw.get("stage")
    return Record(stage=stage if isinstance(stage, int) and not isinstance(stage, bool) and stage >= 0 else 0,
                  last_known_good=_hash(lkg.get("hash")),
                  last_known_good_template=template if isinstance(template, Mapping) else None,
                  released=_hash(raw.get("released")),
                  rejected=tuple(h for h in raw.get("rejected") or () if _hash(h))[-MAX_REJECTED:])


def status_from_json(status: Mapping[str, Any] | None) -> Status:
    """Decode a status; anything malformed (a torn or hand-edited status) reads as absent."""
    status = status if isinstance(status, Mapping) else {}
    raw_records = untrusted.mapping(status.get("deployments"))
    records = {str(name): record for name, raw in raw_records.items() if (record := _record(raw)) is not None}
    stage = status.get("stage")
    released_at = untrusted.timestamp(status.get("releasedAt"))
    if not isinstance(stage, int) or isinstance(stage, bool) or released_at is None:
        stage, released_at = None, None  # no stage without its clock: start the stage over
    return Status(
        phase=phase if isinstance(phase := status.get("phase"), str) and phase in PHASES else HEALTHY,
        stage=stage, released_at=released_at,
        rolled_out_at=untrusted.timestamp(status.get("rolledOutAt")) if stage is not None else None,
        reason=_text(status.get("reason"), 64) or "", message=_text(status.get("message"), 1024) or "",
        observed_promote=_text(status.get("observedPromote")), observed_abort=_text(status.get("observedAbort")),
        observed_retry=_text(status.get("observedRetry")), deployments=records)


def _rfc3339(seconds: float | None) -> str | None:
    return None if seconds is None else untrusted.rfc3339(seconds)


def status_to_json(status: Status) -> dict[str, Any]:
    """The ``status`` object (absent fields as None, so a merge patch deletes them)."""
    return {
        "phase": status.phase, "stage": status.stage, "releasedAt": _rfc3339(status.released_at),
        "rolledOutAt": _rfc3339(status.rolled_out_at), "reason": status.reason, "message": status.message[:1024],
        "observedPromote": status.observed_promote, "observedAbort": status.observed_abort,
        "observedRetry": status.observed_retry,
        "deployments": {name: {
            "stage": r.stage,
            "lastKnownGood": None if r.last_known_good is None else {
                "hash": r.last_known_good, "template": dict(r.last_known_good_template or {})},
            "released": r.released, "rejected": list(r.rejected)}
            for name, r in sorted(status.deployments.items())},
    }


def new_object(namespace: str, group: str) -> dict[str, Any]:
    """The ``AppRollout`` the controller creates for a group it sees first."""
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": group, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "autocrane-controller"}},
            "spec": {}}
