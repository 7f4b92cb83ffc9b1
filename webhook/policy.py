"""Whether to inject into an object, with a named reason, and which sidecar mode to use (pure).

The webhook's registration already keeps most objects away (namespace selector, matchConditions);
these checks repeat that in code, so the offline renderer and a misconfigured registration behave the
same. Reasons are short stable strings, fit for metrics labels and logs.

``hostNetwork`` pods that opt in are refused, not skipped. The injected containers listen on ports
(``watchdoghealthz_port``, ``datadeployer_status_port``); on the host network those ports would bind
on the node, clash between pods of the same node and be reachable from outside the pod. Skipping
silently would start an app that asked for data without its data, or without its readiness gate,
which is the failure opting in is meant to prevent. System pods that use hostNetwork (CNI agents,
kube-proxy) never carry AutoCrane annotations and live in namespaces the registration excludes, so
the refusal only reaches someone who asked for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autocrane import errors, keys
from webhook import options

INJECT = "inject"
NOT_A_POD = "not-a-pod"
NOT_OPTED_IN = "not-opted-in"
OPTED_OUT = "opted-out"
MIRROR_POD = "mirror-pod"
ALREADY_INJECTED = "already-injected"
"""Not decided here: ``webhook.inject`` reports it when re-injecting gives back the same pod."""

_FINITE_RESTART_POLICIES = ("Never", "OnFailure")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one object."""

    inject: bool
    """Whether containers are to be injected."""
    reason: str
    """``INJECT`` or why not (one of the constants of this module)."""


def is_pod(obj: object) -> bool:
    """A Pod, or a pod template (``{metadata, spec}`` without ``kind``, as in workloads)."""
    return isinstance(obj, Mapping) and obj.get("kind", "Pod") == "Pod"


def decide(obj: Mapping[str, object], request: options.PodOptions) -> Decision:
    """Inject or skip; raise ``errors.AnnotationError`` for an opted-in pod that cannot be injected."""
    if not is_pod(obj):
        return Decision(False, NOT_A_POD)
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping) and keys.MIRROR_POD in (metadata.get("annotations") or {}):
        return Decision(False, MIRROR_POD)
    if not request.opted_in:
        return Decision(False, NOT_OPTED_IN)
    if not request.inject:
        return Decision(False, OPTED_OUT)
    spec = obj.get("spec")
    if isinstance(spec, Mapping) and spec.get("hostNetwork") is True:
        raise errors.AnnotationError(request.opt_in_key(), _opt_in_value(obj, request),
                                     "a pod without hostNetwork: the injected containers' ports would bind on the node "
                                     f"(set {keys.INJECT}: \"false\" to run this pod without AutoCrane)")
    return Decision(True, INJECT)


def native_sidecar(obj: Mapping[str, object], request: options.PodOptions,
                   default: bool) -> tuple[bool, list[str]]:
    """Whether to use native sidecars, and warnings.

    Pods meant to finish (``restartPolicy`` Never or OnFailure: Jobs, CronJobs) get native sidecars
    unless the pod says otherwise: a classic sidecar never exits, so the pod would never complete.
    """
    spec = obj.get("spec")
    finite = isinstance(spec, Mapping) and spec.get("restartPolicy") in _FINITE_RESTART_POLICIES
    if request.native_sidecar is None:
        return default or finite, []
    if finite and not request.native_sidecar:
        return False, [f'{keys.NATIVE_SIDECAR}: "false" on a pod with restartPolicy '
                       f"{spec.get('restartPolicy') if isinstance(spec, Mapping) else ''}: "
                       "its sidecars never exit, so the pod never completes"]
    return request.native_sidecar, []


def _opt_in_value(obj: Mapping[str, object], request: options.PodOptions) -> str:
    metadata = obj.get("metadata")
    found = (metadata.get("annotations") or {}) if isinstance(metadata, Mapping) else {}
    return str(found.get(request.opt_in_key(), ""))
