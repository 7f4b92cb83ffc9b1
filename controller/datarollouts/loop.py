"""The data-rollout part of a pass: observe (manifest, DataRollouts, acknowledgements), decide, plan, write.

Run by :class:`controller.passes.Controller` after statuses and evictions, on the same snapshot, and
only while leading. For every namespace and source its pods use:

1. read the repository's manifest and the namespace's ``DataRollout`` objects (created when
   missing), and each data pod's datadeployer ``GET /status`` (the acknowledgement);
2. :func:`controller.datarollouts.decision.step` decides, for each rollout on its own;
3. a first plan writes the new statuses (with their resourceVersion; a rollout whose status is
   refused, say 409, does nothing else this pass and decides again on fresh state); a second
   plan writes, for the rollouts whose status went through, the pods' requests (merged with the
   acknowledgement mirror into one patch per pod), the repository's last known good (the
   namespace's: the manifest is read through
   :meth:`~autocrane.manifests.SourceManifest.for_namespace`) and the Events. The writer
   executes both (:mod:`controller.plan`).

A pod patch is not repeated while the informer still shows the version of the pod it was made
on (our own write not seen yet), so informer lag never doubles a request.

Each pod's acknowledgement, each ``DataRollout`` and each (namespace, source) step is handled on
its own (:mod:`controller.isolation`): one that raises is logged once and left out of the pass,
and the other rollouts take their step.

The acknowledgements are mirrored on each pod as ``status.data.autocrane.io/<name>`` (version and
deployment time, written when they change) so ``autocrane status`` and people can see them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from autocrane import clock, datasets, inpod, keys, kube, manifests
from controller import isolation, metrics, plan, pods
from controller.apiserver import fanout
from controller.datarollouts import decision as datarollout
from controller.datarollouts import participants, repository, resource

log = logging.getLogger(__name__)


async def list_rollouts(api: kube.Api, namespace: str | None) -> list[dict[str, Any]]:
    """Every ``DataRollout`` in ``namespace`` (all namespaces for None), as raw objects."""
    items: list[dict[str, Any]] = (await api.request("GET", resource.list_path(namespace))).get("items") or []
    return items


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    rollouts: int = 0
    requests: int = 0
    status_writes: int = 0
    faults: int = 0
    """Pods and rollouts left out of this pass because handling them raised."""


class StatusReader(Protocol):
    """Reads the datadeployers' ``GET /status`` (``controller.watchdogs.probing.Prober`` does)."""

    concurrency: int

    async def datadeployer_status(self, pod: pods.Pod, port: int) -> object | None: ...


class Manifests(Protocol):
    """Reads the data repository's manifest (``controller.datarollouts.repository.Repository`` does)."""

    async def manifest(self) -> dict[str, manifests.SourceManifest]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Decided:
    """One rollout's step, and the status patch that records it (None: the status is unchanged)."""

    rollout: resource.Rollout
    step: datarollout.Step
    status: plan.RolloutStatus | None


class DataRollouts:
    def __init__(self, api: kube.Api, repo: Manifests, prober: StatusReader, writer: plan.Writer, *,
                 namespaces: Sequence[str] | None = None,
                 policy: datarollout.Policy | None = None,
                 datadeployer_port: int = inpod.DATADEPLOYER_STATUS_PORT,
                 time: clock.Clock = clock.SYSTEM) -> None:
        self.api, self.repo, self.prober, self.writer = api, repo, prober, writer
        self.namespaces = list(namespaces or [])
        self.policy = policy or datarollout.Policy()
        self.port = datadeployer_port
        self.clock = time
        self.faults = isolation.Faults()
        self._sent: dict[str, tuple[str, dict[str, str | None]]] = {}
        """Pod uid -> (its resourceVersion when we patched it, what we wrote): the informer may lag our
        own writes by a pass; writing the same again would be a wasted MODIFIED event."""
        self._skipped: dict[tuple[str, str], str] = {}
        """(pod uid, key) -> why its data-set declaration is left out (logged once)."""

    async def _rollouts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for namespace in self.namespaces or (None,):
            found += await list_rollouts(self.api, namespace)
        return found

    async def _acks(self, data_pods: list[pods.Pod]) -> dict[str, dict[str, inpod.Ack]]:
        answers = await fanout.bounded_map(lambda p: self.prober.datadeployer_status(p, self.port), data_pods,
                                           self.prober.concurrency)
        now = self.clock.time()
        acks: dict[str, dict[str, inpod.Ack]] = {}
        for pod, body in zip(data_pods, answers, strict=True):
            if body is not None:
                acks[pod.uid] = self.faults.call(pod.uid, "acks", functools.partial(inpod.parse_acks, body, now=now),
                                                 {}, pod=pod.key)
        return acks

    def _read_rollouts(self, raw_rollouts: list[dict[str, Any]]
                       ) -> tuple[dict[tuple[str, str], resource.Rollout], dict[tuple[str, str], object]]:
        by_key: dict[tuple[str, str], resource.Rollout] = {}
        raw_status: dict[tuple[str, str], object] = {}
        for obj in raw_rollouts:
            meta = obj.get("metadata")
            name = f"{meta.get('namespace')}/{meta.get('name')}" if isinstance(meta, dict) else "?"
            one = self.faults.call(f"DataRollout {name}", "rollout-read", functools.partial(resource.from_json, obj),
                                   None, rollout=name)
            if one is not None:
                by_key[(one.namespace, one.spec.source)] = one
                raw_status[(one.namespace, one.spec.source)] = obj.get("status")
        return by_key, raw_status

    async def run_pass(self, snapshot: Sequence[pods.Pod], leading: Callable[[], bool]) -> Report:
        self.faults.begin()
        try:
            report = await self._run_pass(snapshot, leading)
        finally:
            faults = len(self.faults.failed)
            self.faults.settle()
        return dataclasses.replace(report, faults=faults)

    def _skip_invalid(self, snapshot: Sequence[pods.Pod]) -> None:
        """Leave declarations the datadeployer would refuse out of the rollouts, saying why once per pod and key."""
        skipped = {}
        for pod in snapshot:
            if any(key.startswith(keys.DATA_PREFIX) for key in pod.annotations):
                _, invalid = datasets.declared(pod.annotations)
                for key, error in invalid.items():
                    skipped[(pod.uid, key)] = reason = error.expected
                    if self._skipped.get((pod.uid, key)) != reason:
                        log.warning("data set declaration left out of data rollouts (the datadeployer refuses it)",
                                    extra={"pod": pod.key, "key": key, "error": str(error)})
        self._skipped = skipped

    async def _run_pass(self, snapshot: Sequence[pods.Pod], leading: Callable[[], bool]) -> Report:
        self._skip_invalid(snapshot)
        data_pods = [p for p in snapshot if participants.sources(p) and not p.terminating]
        if not data_pods:  # no rollout is read, so none is shown: none has a pod to roll out to
            metrics.keep_only(metrics.PER_DATA_ROLLOUT, ())
            return Report()
        try:
            manifest = await self.repo.manifest()
            metrics.REPOSITORY_READS.labels("ok").inc()
        except repository.RepositoryError as exc:
            metrics.REPOSITORY_READS.labels("error").inc()
            log.warning("data repository unreachable; data rollouts wait", extra={"error": str(exc)})
            return Report()
        raw_rollouts, acks = await asyncio.gather(self._rollouts(), self._acks(data_pods))
        by_key, raw_status = self._read_rollouts(raw_rollouts)
        metrics.keep_only(metrics.PER_DATA_ROLLOUT, by_key.keys())
        await self._create_missing(data_pods, by_key, raw_status, leading)
        by_namespace: dict[str, list[pods.Pod]] = defaultdict(list)
        for pod in snapshot:
            by_namespace[pod.namespace].append(pod)
        decided: list[_Decided] = []
        for (namespace, source), one in sorted(by_key.items()):
            if not leading():
                break
            one_step = self.faults.call(f"{namespace}/{source}", "rollout", functools.partial(
                self._decide, one, raw_status.get((namespace, source)), manifest, by_namespace, acks), None,
                namespace=namespace, source=source)
            decided += [one_step] if one_step is not None else []
        statuses = tuple(d.status for d in decided if d.status is not None)
        written = await self.writer.execute(plan.Plan(rollout_statuses=statuses), leading)
        stepped = plan.status_landed(decided, written.rollout_statuses)
        for done in stepped:
            self._record(done)
        await self._write_rest(data_pods, acks, stepped, leading)
        live = {p.uid for p in snapshot}
        self._sent = {uid: sent for uid, sent in self._sent.items() if uid in live}
        return Report(rollouts=len(stepped), requests=sum(len(d.step.requests) for d in stepped),
                      status_writes=len(written.rollout_statuses))

    async def _create_missing(self, data_pods: Sequence[pods.Pod], by_key: dict[tuple[str, str], resource.Rollout],
                              raw_status: dict[tuple[str, str], object], leading: Callable[[], bool]) -> None:
        """Create the DataRollout of every (namespace, source) the pods use that has none."""
        for namespace, source in sorted({(p.namespace, s) for p in data_pods for s in participants.sources(p)}):
            if (namespace, source) in by_key or not leading():
                continue
            created = await self.writer.create_rollout(namespace, source)
            if created is not None:
                one = self.faults.call(f"DataRollout {namespace}/{source}", "rollout-read",
                                       functools.partial(resource.from_json, created), None)
                if one is not None:
                    by_key[(namespace, source)] = one
                    raw_status[(namespace, source)] = created.get("status")

    def _decide(self, one: resource.Rollout, raw_status: object, manifest: dict[str, manifests.SourceManifest],
                by_namespace: dict[str, list[pods.Pod]], acks: dict[str, dict[str, inpod.Ack]]) -> _Decided:
        """One rollout's step, and the status patch that records it."""
        found = manifest.get(one.spec.source)
        step = datarollout.step(one.spec, one.state, None if found is None else found.for_namespace(one.namespace),
                                by_namespace.get(one.namespace, []), acks, self.clock.time(), self.policy)
        stages = len(one.spec.stages or self.policy.stages)
        new_status = resource.status_json(step.state, stages, one, self.clock.time())
        patch = resource.status_patch(one, raw_status if isinstance(raw_status, dict) else None, new_status)
        return _Decided(one, step, None if patch is None else plan.RolloutStatus(one.namespace, one.name, patch))

    def _record(self, one: _Decided) -> None:
        """Say what a rollout whose status is written did: its transitions' log lines and its metrics."""
        where = {"namespace": one.rollout.namespace, "source": one.rollout.spec.source, "rollout": one.rollout.name}
        for message, fields in one.step.log:
            log.info(message, extra={**where, **fields})
        if one.step.rollback is not None:
            metrics.ROLLBACKS.labels(one.step.rollback).inc()
        self._metrics(one.rollout, one.step.state)

    async def _write_rest(self, data_pods: Sequence[pods.Pod], acks: dict[str, dict[str, inpod.Ack]],
                          stepped: Sequence[_Decided], leading: Callable[[], bool]) -> None:
        """The pods' patches (requests and acknowledgement mirrors), the repository's LKG and the Events."""
        unchanged: dict[str, str] = {}
        mirrored = [(pod, self.faults.call(pod.uid, "acks", functools.partial(
            participants.ack_annotations, pod, acks.get(pod.uid, {})), unchanged, pod=pod.key)) for pod in data_pods]
        requests = [(r.pod, r.key, r.request.to_annotation(),
                     {"namespace": d.rollout.namespace, "source": d.rollout.spec.source, "rollout": d.rollout.name,
                      "pod": r.pod.name, "data_set": r.name, "version": r.request.version})
                    for d in stepped for r in d.step.requests]
        data = tuple(patch for patch in plan.data_patches(mirrored, requests) if not self._seen(patch))
        rest = plan.Plan(data=data, events=tuple(e for d in stepped for e in d.step.events), repository=tuple(
            plan.LastKnownGood(d.rollout.spec.source, d.step.repository_lkg, d.rollout.namespace) for d in stepped
            if d.step.repository_lkg is not None))
        written = await self.writer.execute(rest, leading)
        for patch in data:
            if patch.pod.uid in written.data:
                self._sent[patch.pod.uid] = (patch.pod.resource_version, dict(patch.annotations))

    def _seen(self, patch: plan.DataPatch) -> bool:
        """Written on this very version of the pod already: the informer has not caught up with our write."""
        sent = self._sent.get(patch.pod.uid)
        return (sent is not None and sent[0] == patch.pod.resource_version
                and patch.annotations.items() <= sent[1].items())

    def _metrics(self, one: resource.Rollout, current: datarollout.State) -> None:
        namespace, source = one.namespace, one.spec.source
        metrics.ROLLOUT_STAGE.labels(namespace, source).set(current.stage + 1 if current.target else 0)
        metrics.ROLLOUT_STAGE_STARTED.labels(namespace, source).set(current.stage_started or 0)
        spec = one.spec
        metrics.ROLLOUT_DEADLINE.labels(namespace, source).set(
            self.policy.progress_deadline if spec.progress_deadline is None else spec.progress_deadline)
        metrics.ROLLOUT_BAKE.labels(namespace, source).set(
            self.policy.bake_seconds if spec.bake_seconds is None else spec.bake_seconds)
        metrics.drop((metrics.ROLLOUT_VERSION,), (namespace, source))  # the versions in their roles now
        for phase in datarollout.PHASES:
            metrics.ROLLOUT_PHASE.labels(namespace, source, phase).set(1 if current.phase == phase else 0)
        if current.last_known_good:
            metrics.ROLLOUT_VERSION.labels(namespace, source, "last_known_good", current.last_known_good).set(1)
        if current.target:
            metrics.ROLLOUT_VERSION.labels(namespace, source, "target", current.target).set(1)
        for name, value in (("members", current.members), ("on_target", current.on_target),
                            ("acknowledged", current.acknowledged)):
            metrics.ROLLOUT_PODS.labels(namespace, source, name).set(value)
