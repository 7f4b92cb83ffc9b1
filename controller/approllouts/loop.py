"""The app-rollout part of a pass: observe (Deployments, ReplicaSets, AppRollouts), decide, plan, write.

Run by :class:`controller.passes.Controller` after data rollouts, on the same pod snapshot and
the same probe results, and only while leading. For every watched namespace (or all):

1. LIST the Deployments with the group label, the ReplicaSets and the ``AppRollout`` objects;
   group the Deployments by (namespace, group) and create the ``AppRollout`` of a group that has
   none;
2. :func:`controller.approllouts.decision.step` decides each group on its own, from its
   Deployments, their ReplicaSets, the namespace's pods (the informer's, as this pass's status
   patches left them) and which of them got no answer from a probe this pass (inconclusive);
3. a first plan writes the new statuses (whole, on the resourceVersion read: a group whose
   status is refused does nothing else this pass and decides again on fresh state);
   a second plan writes, for the groups whose status went through (or did not change), the
   Deployment writes and the Events. The status goes first, so the webhook already sees a
   release when the controller unpauses, and a crash in between repeats the write, never an
   earlier stage (the decision re-issues a release found paused, a restore found undone).

Each group is handled on its own (:mod:`controller.isolation`): one that raises is logged once
and left out of the pass.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from autocrane import approllouts, clock, kube
from controller import isolation, metrics, plan, pods
from controller.approllouts import decision, objects
from controller.watchdogs import health

log = logging.getLogger(__name__)
A = approllouts


def _items(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = answer.get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _scope(namespace: str | None, plural: str, group: str = "apps/v1") -> str:
    base = f"/apis/{group}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


async def list_groups(api: kube.Api, namespace: str | None) -> list[dict[str, Any]]:
    """Every ``AppRollout`` in ``namespace`` (all namespaces for None), as raw objects."""
    return _items(await api.request("GET", _scope(namespace, A.PLURAL, A.API_VERSION)))


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    groups: int = 0
    status_writes: int = 0
    deployment_writes: int = 0
    faults: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class _Group:
    namespace: str
    name: str
    rollout: Mapping[str, Any]
    """The raw ``AppRollout``."""
    seen: decision.Observed


@dataclasses.dataclass(frozen=True, slots=True)
class _Decided:
    group: _Group
    step: decision.Step
    status: plan.AppRolloutStatus | None
    """The status patch (None: unchanged)."""


def unanswered(results: Mapping[str, Mapping[str, health.ProbeResult]]) -> frozenset[str]:
    """uids of the pods with a probe that got no answer this pass (an inconclusive report)."""
    return frozenset(uid for uid, by_name in results.items() if any(r.outcome == "unknown" for r in by_name.values()))


def _present(value: Any) -> Any:
    """``value`` without the None fields (absent, in the stored object)."""
    if isinstance(value, Mapping):
        return {k: _present(v) for k, v in value.items() if v is not None}
    return value


def status_write(namespace: str, rollout: Mapping[str, Any], new: A.Status) -> plan.AppRolloutStatus | None:
    """The write of ``new`` on the object's resourceVersion; None when the stored status says the same."""
    wanted = _present(A.status_to_json(new))
    current = rollout.get("status")
    if isinstance(current, Mapping) and _present(A.status_to_json(A.status_from_json(current))) == wanted:
        return None
    meta = rollout.get("metadata") or {}
    return plan.AppRolloutStatus(namespace, str(meta.get("name", "")), str(meta.get("resourceVersion", "")), wanted)


class AppRollouts:
    def __init__(self, api: kube.Api, writer: plan.Writer, *, namespaces: Sequence[str] | None = None,
                 time: clock.Clock = clock.SYSTEM) -> None:
        self.api, self.writer = api, writer
        self.namespaces = list(namespaces or [])
        self.clock = time
        self.faults = isolation.Faults()

    async def run_pass(self, snapshot: Sequence[pods.Pod], results: Mapping[str, Mapping[str, health.ProbeResult]],
                       leading: Callable[[], bool]) -> Report:
        self.faults.begin()
        try:
            report = await self._run_pass(snapshot, results, leading)
        finally:
            faults = len(self.faults.failed)
            self.faults.settle()
        return dataclasses.replace(report, faults=faults)

    async def _observe(self, namespace: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                               list[dict[str, Any]]]:
        selector = {"labelSelector": A.GROUP_LABEL}
        deployments = _items(await self.api.request("GET", _scope(namespace, "deployments"), query=selector))
        if not deployments:
            return [], [], []
        replica_sets = _items(await self.api.request("GET", _scope(namespace, "replicasets")))
        return deployments, replica_sets, await list_groups(self.api, namespace)

    async def _groups(self, snapshot: Sequence[pods.Pod], gone: frozenset[str],
                      leading: Callable[[], bool]) -> list[_Group]:
        found: list[_Group] = []
        by_namespace: dict[str, list[pods.Pod]] = defaultdict(list)
        for pod in snapshot:
            by_namespace[pod.namespace].append(pod)
        for namespace in self.namespaces or (None,):
            raw_deployments, raw_sets, raw_rollouts = await self._observe(namespace)
            members: dict[tuple[str, str], list[objects.Deployment]] = defaultdict(list)
            for raw in raw_deployments:
                d = self.faults.call(_key(raw), "approllout-read", functools.partial(objects.deployment_from_json, raw),
                                     None)
                if d is not None:
                    members[(d.namespace, d.group)].append(d)
            sets = [rs for raw in raw_sets if (rs := objects.replica_set_from_json(raw)) is not None]
            rollouts = {(str((r.get("metadata") or {}).get("namespace")), str((r.get("metadata") or {}).get("name"))): r
                        for r in raw_rollouts}
            for (ns, group), deployments in sorted(members.items()):
                rollout = rollouts.get((ns, group))
                if rollout is None and leading():
                    rollout = await self.writer.create_app_rollout(ns, group)
                if rollout is None:
                    continue  # created by someone else meanwhile: the next pass reads it
                uids = {d.uid for d in deployments}
                seen = decision.Observed(tuple(sorted(deployments, key=lambda d: (d.stage, d.name))),
                                         tuple(rs for rs in sets if rs.owner_uid in uids),
                                         tuple(by_namespace.get(ns, ())), gone)
                found.append(_Group(ns, group, rollout, seen))
        return found

    def _decide(self, group: _Group) -> _Decided:
        spec = _spec(group.rollout)
        raw_status = group.rollout.get("status")
        status = A.status_from_json(raw_status if isinstance(raw_status, Mapping) else None)
        step = decision.step(spec, status, group.seen, self.clock.time())
        return _Decided(group, step, status_write(group.namespace, group.rollout, step.status))

    async def _run_pass(self, snapshot: Sequence[pods.Pod], results: Mapping[str, Mapping[str, health.ProbeResult]],
                        leading: Callable[[], bool]) -> Report:
        groups = await self._groups(snapshot, unanswered(results), leading)
        metrics.keep_only(metrics.PER_APP_ROLLOUT, {(g.namespace, g.name) for g in groups})
        decided = []
        for group in groups:
            if not leading():
                break
            one = self.faults.call(f"AppRollout {group.namespace}/{group.name}", "approllout",
                                   functools.partial(self._decide, group), None,
                                   namespace=group.namespace, group=group.name)
            decided += [one] if one is not None else []
        statuses = tuple(d.status for d in decided if d.status is not None)
        written = await self.writer.execute(plan.Plan(app_statuses=statuses), leading)
        stepped = plan.status_landed(decided, written.app_statuses)
        for one in stepped:
            self._record(one)
        rest = plan.Plan(app_actions=tuple(a for d in stepped for a in d.step.actions),
                         app_events=tuple(e for d in stepped for e in d.step.events))
        done = await self.writer.execute(rest, leading)
        return Report(groups=len(stepped), status_writes=len(written.app_statuses),
                      deployment_writes=len(done.app_actions))

    def _record(self, one: _Decided) -> None:
        """Say what a group whose status is written did: its transitions' log lines and its metrics."""
        where = {"namespace": one.group.namespace, "group": one.group.name}
        for message, fields in one.step.log:
            log.info(message, extra={**where, **fields})
        if one.step.rollback is not None:
            metrics.APP_ROLLBACKS.labels(one.step.rollback).inc()
        if one.step.baked is not None:
            metrics.APP_STAGE_DURATION.observe(one.step.baked[1])
        for phase in A.PHASES:
            metrics.APP_PHASE.labels(one.group.namespace, one.group.name, phase).set(
                1 if one.step.status.phase == phase else 0)
        status, spec = one.step.status, _spec(one.group.rollout)
        position, count = stage_progress((d.stage for d in one.group.seen.deployments), status.stage)
        labels = (one.group.namespace, one.group.name)
        metrics.APP_STAGE.labels(*labels).set(position)
        metrics.APP_STAGES.labels(*labels).set(count)
        metrics.APP_STAGE_RELEASED.labels(*labels).set(status.released_at or 0)
        metrics.APP_STAGE_LIMIT.labels(*labels).set(spec.progress_deadline + spec.bake_seconds)


def _spec(rollout: Mapping[str, Any]) -> A.Spec:
    raw = rollout.get("spec")
    return A.spec_from_json(raw if isinstance(raw, Mapping) else None)


def stage_progress(stages: Iterable[int], current: int | None) -> tuple[int, int]:
    """(1-based position of the current stage among the group's distinct stages, 0 when none; their count)."""
    distinct = sorted(set(stages))
    position = distinct.index(current) + 1 if current is not None and current in distinct else 0
    return position, len(distinct)


def _key(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return f"Deployment {meta.get('namespace')}/{meta.get('name')}"
