"""Holding a staged Deployment whose new template is not released yet: admission -> patch (pure).

The API server sends this webhook ``CREATE`` and ``UPDATE`` of ``apps/v1`` Deployments that carry
``rollout.autocrane.io/group`` (the registration's objectSelector), never ``deployments/scale``,
so HPA is never in its way (docs/app-rollouts.md). For an update, the new template's hash ``T``
is compared with what the group's ``AppRollout`` status records for the Deployment:

- ``T`` is its last known good or its released template: the update passes as it is;
- otherwise the Deployment is held: ``spec.paused: true`` is set in the same request, so no pod of
  ``T`` starts before the controller releases it. That holds on every update while it is held, so
  an apply that leaves ``paused`` out, or sets it false, does not release it;
- the Deployment has no record yet (new to the group): it passes (nothing to protect yet);
- a rejected template re-applied while its rollback still runs (the old object has the last known
  good template and has not rolled it out yet) is refused (409): pausing it there would stop the
  rollback half-way with pods of the rejected template running; a GitOps tool retries, and once
  the rollback is done the re-apply is accepted and held;
- the status could not be read (``status`` is None): an update that changes the template is held,
  and one that keeps the template keeps ``paused`` as it was. Holding only ever delays.

Creates pass unchanged: a new Deployment has no version to protect. A Deployment whose update
removes the group label has left the group: it passes as it is (docs/app-rollouts.md, removal).

:func:`parse` reads what a decision needs from an AdmissionReview, :func:`answer` turns the
decision into one (pure both); ``webhook.server`` reads the ``AppRollout`` in between.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from autocrane import approllouts, bodies
from webhook import admission

HELD = "held"
PASSED = "passed"
REFUSED = "refused"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    verdict: str
    """``held``, ``passed`` or ``refused``."""
    reason: str
    """Why, in words (an audit annotation and the log line)."""
    patch: tuple[dict[str, Any], ...] = ()
    """RFC 6902 operations (empty: no change)."""


def _template(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    spec = (obj or {}).get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    return template if isinstance(template, Mapping) else {}


def _paused(obj: Mapping[str, Any] | None) -> bool:
    spec = (obj or {}).get("spec")
    return isinstance(spec, Mapping) and spec.get("paused") is True


def _hold(reason: str, new: Mapping[str, Any], paused: bool = True) -> Decision:
    if _paused(new) == paused:
        return Decision(HELD, reason)
    return Decision(HELD, reason, ({"op": "add", "path": "/spec/paused", "value": paused},))


def _rolling_back(old: Mapping[str, Any] | None, record: approllouts.Record) -> bool:
    """The old object has the last known good template and has not fully rolled it out."""
    if old is None or approllouts.template_hash(_template(old)) != record.last_known_good:
        return False
    def part(key: str) -> Mapping[str, Any]:
        found = old.get(key) if old is not None else None
        return found if isinstance(found, Mapping) else {}

    meta, spec, status = part("metadata"), part("spec"), part("status")
    if not status:
        return False  # nothing observed yet: nothing seen rolling back

    def number(parent: Mapping[str, Any], key: str, default: int = 0) -> int:
        value = parent.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    replicas = number(spec, "replicas", 1)
    updated = number(status, "updatedReplicas")
    return (number(status, "observedGeneration") < number(meta, "generation") or updated < replicas
            or number(status, "availableReplicas") < replicas or number(status, "replicas") > updated)


def decide(operation: str, old: Mapping[str, Any] | None, new: Mapping[str, Any], name: str,
           status: approllouts.Status | None) -> Decision:
    """Hold or pass one admission of Deployment ``name``; ``status`` None: the AppRollout could not be read."""
    if operation != "UPDATE":
        return Decision(PASSED, "not an update")
    wanted = approllouts.template_hash(_template(new))
    if status is None:
        if wanted != approllouts.template_hash(_template(old)):
            return _hold("the AppRollout could not be read; a new template is held until it can be", new)
        if _paused(old) and not _paused(new):
            return _hold("the AppRollout could not be read; paused stays as it was", new)
        return Decision(PASSED, "the AppRollout could not be read; the template is unchanged")
    record = status.deployments.get(name)
    if record is None or record.last_known_good is None:
        return Decision(PASSED, "new to the group: nothing to protect yet")
    if record.settled(wanted):
        return Decision(PASSED, f"template {wanted} is released or the last known good")
    if wanted in record.rejected:
        if _rolling_back(old, record):
            return Decision(REFUSED, f"template {wanted} was rejected and the rollback to {record.last_known_good} "
                                     "is still rolling out; apply it again once that is done (it is then kept paused)")
        return _hold(f"template {wanted} was rejected; it stays paused on the last known good version", new)
    return _hold(f"template {wanted} is held until its stage is released", new)


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """What :func:`decide` needs from one AdmissionReview of a Deployment."""

    uid: str
    operation: str
    namespace: str
    name: str
    group: str | None
    """The group of the new object (None: not, or no longer, in a group)."""
    old: Mapping[str, Any] | None
    new: Mapping[str, Any]


def parse(review: object) -> Request:
    """The request of an AdmissionReview v1 of a Deployment; ``admission.MalformedReview`` if it is none."""
    request = admission.request_of(review)
    new = request.get("object")
    if not isinstance(new, Mapping):
        raise admission.MalformedReview("request.object must be the Deployment")
    old = request.get("oldObject")
    meta = new.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    name = request.get("name") or (meta.get("name") if isinstance(meta, Mapping) else "")
    return Request(uid=request["uid"], operation=str(request.get("operation") or ""),
                   namespace=str(request.get("namespace") or ""), name=str(name or ""),
                   group=approllouts.group_of(labels if isinstance(labels, Mapping) else None),
                   old=old if isinstance(old, Mapping) else None, new=new)


def decide_request(request: Request, status: approllouts.Status | None) -> Decision:
    """:func:`decide` for a parsed request; a Deployment outside any group passes."""
    if request.group is None:
        return Decision(PASSED, "not in a group (or it left its group)")
    return decide(request.operation, request.old, request.new, request.name, status)


def answer(request: Request, decision: Decision) -> bodies.AdmissionReview:
    """The AdmissionReview for ``decision``: allowed (but for a refusal), with the pause as a JSON patch when
    one is needed, the reason as an audit annotation, and a warning when the Deployment is held."""
    if decision.verdict == REFUSED:
        return admission.answer(request.uid, {"allowed": False, "status": {
            "code": 409, "reason": "Conflict", "message": f"autocrane: {decision.reason}"}})
    response: bodies.AdmissionResponse = {"allowed": True, "auditAnnotations": {"hold": decision.reason[:256]}}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(decision.patch)).encode()).decode()
    if decision.verdict == HELD:
        response["warnings"] = [f"held by AutoCrane (spec.paused): {decision.reason}"]
    return admission.answer(request.uid, response)
