"""A snapshot of pods -> which failing pods to evict now, which to hold and why (pure).

A pod becomes a candidate when its health is ``error`` (worst watchdog status, see
``controller.watchdogs.health``) for ``observations`` consecutive passes *and* for at least ``min_error_seconds``
since the earliest error status' time. The time comes from the annotation, so it survives a
controller restart or failover; the consecutive count lives in memory and starts again at 0
after a restart, which can only delay an eviction, never hasten it.

PodDisruptionBudgets stay the last word (the Eviction API enforces them, see ``controller.apiserver.writer``),
but a PDB counts *Ready* pods, and a pod whose watchdog fails is often still Ready, so the plan
adds its own limits, checked in this order:

1. never evictable: bare pods (nothing recreates them), DaemonSet pods (the replacement lands on
   the same node), mirror pods, terminating pods, pods annotated ``eviction.autocrane.io/opt-out``;
2. not yet: younger than ``min_pod_age``; within a 429 back-off;
3. the circuit breaker: when more than ``max_failing_share`` of an owner's pods are in error at
   once, none of them is evicted: a fleet-wide failure is an outage, not a reason to restart
   everything;
4. caps per pass, per namespace and per owner; longest-failing pods go first.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from autocrane import keys
from controller import pods
from controller.watchdogs import health


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    observations: int = 3
    """Consecutive passes a pod must be seen in error."""
    min_error_seconds: float = 60.0
    """...and for at least this long (from its earliest error status' time)."""
    min_pod_age: float = 300.0
    """Pods younger than this are never evicted (start-up grace)."""
    max_per_pass: int = 5
    max_per_namespace: int = 2
    """Per pass."""
    max_per_owner: int = 1
    """Per pass; with the owner's PDB this paces a workload to one eviction at a time."""
    max_failing_share: float = 0.5
    """Circuit breaker: more than this share of an owner's pods in error means evict none of them."""


@dataclasses.dataclass(frozen=True, slots=True)
class Streak:
    """How long the controller itself has seen a pod in error without a break."""

    count: int
    first_seen: float


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    pod: pods.Pod
    reason: str
    """Machine-friendly: ``evict``, ``bare-pod``, ``daemonset``, ``circuit-breaker``, ``cap-per-owner``..."""
    message: str
    """For people: the Event note and log line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Breaker:
    """An owner whose circuit breaker holds evictions."""

    namespace: str
    owner: pods.Owner
    failing: int
    total: int


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    evict: tuple[Decision, ...] = ()
    skipped: tuple[Decision, ...] = ()
    """Failing pods that qualified (or would have) but are held, each with its reason."""
    waiting: int = 0
    """Failing pods not yet failing long enough; not reported one by one."""
    breakers: tuple[Breaker, ...] = ()


def owner_key(pod: pods.Pod) -> tuple[str, str, str] | None:
    return None if pod.owner is None else (pod.namespace, pod.owner.kind, pod.owner.name)


def is_failing(pod: pods.Pod) -> bool:
    return not pod.terminating and health.level(pod) == "error"


def observe(streaks: Mapping[str, Streak], snapshot: Iterable[pods.Pod], now: float) -> dict[str, Streak]:
    """The streaks after one more pass over ``snapshot`` (by pod uid); pods not failing drop out."""
    updated: dict[str, Streak] = {}
    for pod in snapshot:
        if is_failing(pod):
            old = streaks.get(pod.uid)
            updated[pod.uid] = Streak(old.count + 1, old.first_seen) if old else Streak(1, now)
    return updated


def _never(pod: pods.Pod) -> tuple[str, str] | None:
    if pod.owner is None:
        return "bare-pod", "not evicted: a bare pod is not recreated by any controller"
    if pod.owner.kind == "DaemonSet":
        return "daemonset", "not evicted: a DaemonSet pod would come back on the same node"
    if pod.mirror:
        return "mirror-pod", "not evicted: a mirror pod is managed by its kubelet"
    if pod.opted_out:
        return "opted-out", f"not evicted: annotated {keys.EVICTION_OPT_OUT}=true"
    return None


def _breakers(snapshot: list[pods.Pod], failing_uids: set[str], policy: Policy) -> dict[tuple[str, str, str], Breaker]:
    total: dict[tuple[str, str, str], int] = defaultdict(int)
    failing: dict[tuple[str, str, str], int] = defaultdict(int)
    owners: dict[tuple[str, str, str], pods.Owner] = {}
    for pod in snapshot:
        key = owner_key(pod)
        if key is None or pod.terminating or pod.owner is None:
            continue
        owners[key] = pod.owner
        total[key] += 1
        failing[key] += pod.uid in failing_uids
    return {
        key: Breaker(key[0], owners[key], failing[key], total[key])
        for key in total if failing[key] > policy.max_failing_share * total[key]
    }


def plan(snapshot: Iterable[pods.Pod], streaks: Mapping[str, Streak], policy: Policy, now: float,
         backoff_until: Mapping[str, float] | None = None) -> Plan:
    """Decide over one snapshot; ``streaks`` already include this pass (see :func:`observe`)."""
    every = list(snapshot)
    backoff_until = backoff_until or {}
    failing_uids = {pod.uid for pod in every if is_failing(pod)}  # parsed once: statuses are per pod
    breakers = _breakers(every, failing_uids, policy)
    ripe: list[tuple[float, pods.Pod]] = []
    skipped: list[Decision] = []
    waiting = 0
    for pod in every:
        if pod.uid not in failing_uids:
            continue
        streak = streaks.get(pod.uid)
        since = health.error_since(pod)
        if since is None or math.isinf(since):
            since = streak.first_seen if streak else now
        if streak is None or streak.count < policy.observations or now - since < policy.min_error_seconds:
            waiting += 1
            continue
        never = _never(pod)
        if never is not None:
            skipped.append(Decision(pod, *never))
        elif now - pod.created < policy.min_pod_age:
            skipped.append(Decision(pod, "too-young", f"not evicted yet: younger than {policy.min_pod_age:.0f}s"))
        elif backoff_until.get(pod.uid, 0.0) > now:
            waiting += 1  # blocked by its PDB recently; the block was reported then
        elif (key := owner_key(pod)) in breakers:
            b = breakers[key]
            skipped.append(Decision(pod, "circuit-breaker", (
                f"not evicted: {b.failing} of {b.total} pods of {b.owner.kind} {b.owner.name} fail at once "
                f"(more than {policy.max_failing_share:.0%}); an outage is not fixed by restarting everything")))
        else:
            ripe.append((since, pod))
    evict: list[Decision] = []
    per_namespace: dict[str, int] = defaultdict(int)
    per_owner: dict[tuple[str, str, str] | None, int] = defaultdict(int)
    for since, pod in sorted(ripe, key=lambda item: (item[0], item[1].key)):
        key = owner_key(pod)
        if len(evict) >= policy.max_per_pass:
            skipped.append(Decision(pod, "cap-per-pass", f"not evicted this pass: {policy.max_per_pass} already"))
        elif per_namespace[pod.namespace] >= policy.max_per_namespace:
            skipped.append(Decision(pod, "cap-per-namespace",
                                    f"not evicted this pass: {policy.max_per_namespace} already in {pod.namespace}"))
        elif per_owner[key] >= policy.max_per_owner:
            skipped.append(Decision(pod, "cap-per-owner",
                                    f"not evicted this pass: {policy.max_per_owner} already of the same owner"))
        else:
            per_namespace[pod.namespace] += 1
            per_owner[key] += 1
            evict.append(Decision(pod, "evict", (
                f"watchdogs in error for {now - since:.0f}s over {streaks[pod.uid].count} observations")))
    return Plan(evict=tuple(evict), skipped=tuple(skipped), waiting=waiting, breakers=tuple(breakers.values()))
