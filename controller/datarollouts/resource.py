"""Rollout state in the cluster: the ``DataRollout`` custom resource (``autocrane.io/v1alpha1``).

One namespaced ``DataRollout`` per source a namespace's pods use (the CRD is in
``charts/autocrane/files/crds/``). The controller creates it when it first sees a pod using the
source; people may create it first to choose stages and bake time. Its ``spec`` is people's:
``stages``, ``bakeSeconds``, ``progressDeadlineSeconds``, and the manual controls ``pinVersion``,
``promote``, ``abort``. Its ``status`` is the controller's, and the only memory a rollout has
besides the pods' request annotations: phase, last known good, target, stage and its start, held
versions, the last promote/abort tokens acted on, counts, and conditions for ``kubectl wait``:

- ``Progressing``: True while a version rolls out (reason ``Stage<n>``);
- ``Complete``: True when nothing rolls out and the last rollout (if any) succeeded
  (``kubectl wait --for=condition=Complete datarollout/<name>``);
- ``RolledBack``: True after a rollback, until the next rollout starts.

Status updates are merge patches of ``/status`` carrying the object's ``resourceVersion``: two
leaders (briefly, during a failover) cannot both move a stage; the loser gets 409 and decides
again on the next pass. Everything here is pure: the reading is :func:`controller.datarollouts.loop.list_rollouts`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from autocrane import untrusted
from controller.datarollouts import decision as datarollout

GROUP, VERSION, PLURAL, KIND = "autocrane.io", "v1alpha1", "datarollouts", "DataRollout"
API_VERSION = f"{GROUP}/{VERSION}"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # fullmatch, not "$"


def path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def object_name(source: str) -> str:
    """The object name for a source: ``models/resnet`` -> ``models.resnet``; a hash when that is no name."""
    name = source.replace("/", ".").replace("_", "-")
    if len(name) <= 253 and _NAME.fullmatch(name):
        return name
    return "source-" + hashlib.sha256(source.encode()).hexdigest()[:12]


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


@dataclasses.dataclass(frozen=True, slots=True)
class Rollout:
    """One ``DataRollout`` as read from the API server."""

    namespace: str
    name: str
    resource_version: str
    generation: int
    spec: datarollout.Spec
    state: datarollout.State
    conditions: tuple[dict[str, Any], ...] = ()
    problem: str | None = None
    """Why (part of) the spec was ignored."""


def _progress(status: Mapping[str, Any]) -> datarollout.Progress:
    """What the status says rolls out. A target with both clocks is a rollout in progress; a status
    torn or edited by hand (a target without its clocks, a phase without its target) starts over, idle."""
    target, started = _text(status.get("target")), untrusted.timestamp(status.get("started"))
    stage_started = untrusted.timestamp(status.get("stageStarted"))
    if target and started is not None and stage_started is not None:
        return datarollout.Progressing(target, max(0, int(status.get("stage") or 0) - 1), started, stage_started)
    phase = status.get("phase")
    if phase == datarollout.PINNED:
        return datarollout.Pinned()
    return datarollout.Idle(phase if phase in (datarollout.SUCCEEDED, datarollout.ROLLED_BACK) else datarollout.IDLE)


def from_json(obj: Mapping[str, Any]) -> Rollout:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    problem = None
    stages: tuple[str, ...] | None = None
    if spec.get("stages"):
        try:
            stages = datarollout.check_stages([str(s) for s in spec["stages"]])
        except ValueError as exc:
            problem = f"spec.stages ignored: {exc}"

    def seconds(key: str) -> float | None:
        value = spec.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    state = datarollout.State(
        progress=_progress(status), last_known_good=_text(status.get("lastKnownGood")),
        held=tuple(str(v) for v in status.get("held") or () if isinstance(v, str)),
        observed_promote=_text(status.get("observedPromote")), observed_abort=_text(status.get("observedAbort")),
        message=str(status.get("message") or ""), members=int(status.get("members") or 0),
        on_target=int(status.get("onTarget") or 0), acknowledged=int(status.get("acknowledged") or 0))
    return Rollout(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
        resource_version=str(meta.get("resourceVersion", "")), generation=int(meta.get("generation") or 0),
        spec=datarollout.Spec(source=str(spec.get("source", "")), stages=stages, bake_seconds=seconds("bakeSeconds"),
                          progress_deadline=seconds("progressDeadlineSeconds"),
                          pin_version=_text(spec.get("pinVersion")), promote=_text(spec.get("promote")),
                          abort=_text(spec.get("abort"))),
        state=state, conditions=tuple(c for c in status.get("conditions") or () if isinstance(c, dict)),
        problem=problem)


def conditions(state: datarollout.State, old: Sequence[Mapping[str, Any]], generation: int,
               now: float) -> list[dict[str, Any]]:
    """The three conditions for ``state``; a condition keeps its transition time while its status holds."""
    progressing = state.phase == datarollout.PROGRESSING
    wanted = [
        ("Progressing", progressing, f"Stage{state.stage + 1}" if progressing else state.phase),
        ("Complete", state.phase in (datarollout.IDLE, datarollout.SUCCEEDED), state.phase),
        ("RolledBack", state.phase == datarollout.ROLLED_BACK, state.phase),
    ]
    before = {c.get("type"): c for c in old}
    out = []
    for kind, true, reason in wanted:
        status = "True" if true else "False"
        previous = before.get(kind) or {}
        since = previous.get("lastTransitionTime") if previous.get("status") == status else None
        out.append({"type": kind, "status": status, "reason": reason, "message": state.message[:1024],
                    "lastTransitionTime": since or untrusted.rfc3339(now), "observedGeneration": generation})
    return out


def status_json(state: datarollout.State, stages: int, old: Rollout, now: float) -> dict[str, Any]:
    """The ``status`` for ``state`` (absent fields as None, so a merge patch deletes them)."""
    running = state.target is not None
    return {
        "phase": state.phase, "lastKnownGood": state.last_known_good, "target": state.target,
        "stage": state.stage + 1 if running else 0, "stages": stages,
        "stageText": f"{state.stage + 1}/{stages}" if running else "",
        "started": _rfc3339_or_none(state.started), "stageStarted": _rfc3339_or_none(state.stage_started),
        "held": list(state.held), "observedPromote": state.observed_promote, "observedAbort": state.observed_abort,
        "message": (f"{old.problem}; " if old.problem else "") + state.message,
        "members": state.members, "onTarget": state.on_target, "acknowledged": state.acknowledged,
        "observedGeneration": old.generation,
        "conditions": conditions(state, old.conditions, old.generation, now),
    }


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in status.items() if v not in (None, "", []) and k != "conditions"}
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                         for c in status.get("conditions") or ()]
    return out


def status_patch(old: Rollout, raw_status: Mapping[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that writes ``new`` (a :func:`status_json`), or None when nothing changed."""
    if raw_status is not None and _comparable(raw_status) == _comparable(new):
        return None
    return {"metadata": {"resourceVersion": old.resource_version}, "status": new}


def new_object(namespace: str, source: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": object_name(source), "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "autocrane-controller"}},
            "spec": {"source": source}}


def list_path(namespace: str | None) -> str:
    """Where the ``DataRollout`` objects of ``namespace`` (all namespaces for None) are listed."""
    return f"/apis/{GROUP}/{VERSION}/{PLURAL}" if namespace is None else path(namespace)


def _rfc3339_or_none(seconds: float | None) -> str | None:
    return None if seconds is None else untrusted.rfc3339(seconds)
