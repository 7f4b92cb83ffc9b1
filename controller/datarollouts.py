"""The data-rollout part of a pass: observe (manifest, DataRollouts, acknowledgements), decide, act.

Run by :class:`controller.loop.Controller` after statuses and evictions, on the same snapshot, and
only while leading. For every namespace and source its pods use:

1. read the repository's manifest and the namespace's ``DataRollout`` objects (created when
   missing), and each data pod's datadeployer ``GET /status`` (the acknowledgement);
2. :func:`controller.rollout.step` decides;
3. write the new status first (with its resourceVersion; on 409 nothing else is done this pass),
   then the pods' requests, the repository's last known good (the namespace's: the manifest is
   read through :meth:`~autocrane.manifests.SourceManifest.for_namespace`) and the Events, all through
   :class:`controller.apply.Applier`.

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
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from autocrane import manifests
from controller import apply, fanout, isolation, kubeapi, metrics, pods, probing, repository, rollout, state

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    rollouts: int = 0
    requests: int = 0
    status_writes: int = 0
    faults: int = 0
    """Pods and rollouts left out of this pass because handling them raised."""


@dataclasses.dataclass
class _PodWrites:
    """The pod patches a pass collects, written after every rollout has stepped."""

    changes: dict[str, dict[str, str | None]] = dataclasses.field(default_factory=lambda: defaultdict(dict))
    """Pod uid -> annotations to set."""
    owners: dict[str, pods.Pod] = dataclasses.field(default_factory=dict)
    asked: dict[str, list[dict[str, object]]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    """Pod uid -> log fields of each request in its patch."""


class DataRollouts:
    def __init__(self, api: kubeapi.KubeApi, repo: repository.Repository, prober: probing.Prober,
                 applier: apply.Applier, *, namespaces: Sequence[str] | None = None,
                 policy: rollout.Policy | None = None, datadeployer_port: int = 8098,
                 clock: Callable[[], float] = time.time) -> None:
        self.api, self.repo, self.prober, self.applier = api, repo, prober, applier
        self.namespaces = list(namespaces or [])
        self.policy = policy or rollout.Policy()
        self.port = datadeployer_port
        self.clock = clock
        self.faults = isolation.Faults()
        self._sent: dict[str, tuple[str, dict[str, str | None]]] = {}
        """Pod uid -> (its resourceVersion when we patched it, what we wrote): the informer may lag our
        own writes by a pass; writing the same again would be a wasted MODIFIED event."""

    async def _rollouts(self) -> list[dict[str, object]]:
        found = []
        for namespace in self.namespaces or [None]:
            found += await state.list_rollouts(self.api, namespace)
        return found

    async def _acks(self, data_pods: list[pods.Pod]) -> dict[str, dict[str, rollout.Ack]]:
        answers = await fanout.bounded_map(lambda p: self.prober.datadeployer_status(p, self.port), data_pods,
                                           self.prober.concurrency)
        now = self.clock()
        acks = {}
        for pod, body in zip(data_pods, answers, strict=True):
            if body is not None:
                acks[pod.uid] = self.faults.call(pod.uid, "acks", lambda body=body: rollout.parse_acks(body, now=now),
                                                 {}, pod=pod.key)
        return acks

    def _read_rollouts(self, raw_rollouts: list[dict[str, object]]
                       ) -> tuple[dict[tuple[str, str], state.Rollout], dict[tuple[str, str], object]]:
        by_key, raw_status = {}, {}
        for obj in raw_rollouts:
            meta = obj.get("metadata")
            name = f"{meta.get('namespace')}/{meta.get('name')}" if isinstance(meta, dict) else "?"
            one = self.faults.call(f"DataRollout {name}", "rollout-read", lambda obj=obj: state.from_json(obj), None,
                                   rollout=name)
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

    async def _run_pass(self, snapshot: Sequence[pods.Pod], leading: Callable[[], bool]) -> Report:
        data_pods = [p for p in snapshot if rollout.sources(p) and not p.terminating]
        if not data_pods:
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
        by_namespace: dict[str, list[pods.Pod]] = defaultdict(list)
        for pod in snapshot:
            by_namespace[pod.namespace].append(pod)
        wanted = sorted({(p.namespace, s) for p in data_pods for s in rollout.sources(p)})
        for namespace, source in wanted:
            if (namespace, source) in by_key or not leading():
                continue
            try:
                manifests.check_source(source)
            except manifests.ManifestError:
                continue  # the datadeployer reports a malformed source on its own data set
            created = await self.applier.create_rollout(namespace, source)
            if created is not None:
                one = self.faults.call(f"DataRollout {namespace}/{source}", "rollout-read",
                                       lambda created=created: state.from_json(created), None)
                if one is not None:
                    by_key[(namespace, source)] = one
                    raw_status[(namespace, source)] = created.get("status")

        writes = _PodWrites()
        for pod in data_pods:
            mirrored = self.faults.call(pod.uid, "acks", lambda pod=pod: rollout.ack_annotations(
                pod, acks.get(pod.uid, {})), {}, pod=pod.key)
            if mirrored:
                writes.changes[pod.uid].update(mirrored)
                writes.owners[pod.uid] = pod
        report = Report()
        metrics.ROLLOUT_VERSION.clear()
        for (namespace, source), one in sorted(by_key.items()):
            if not leading():
                break
            report = await self.faults.acall(
                f"{namespace}/{source}", "rollout", lambda one=one, so_far=report: self._step(
                    one, raw_status.get((one.namespace, one.spec.source)), manifest, by_namespace, acks, so_far,
                    writes), report, namespace=namespace, source=source)
        for uid, patch_ in writes.changes.items():
            if not leading():
                break
            pod = writes.owners[uid]
            sent = self._sent.get(uid)
            if sent is not None and sent[0] == pod.resource_version and patch_.items() <= sent[1].items():
                continue  # written on this very version of the pod: the informer has not caught up yet
            if await self.applier.write_data(pod, patch_) == "ok":
                self._sent[uid] = (pod.resource_version, patch_)
                for fields in writes.asked.get(uid, ()):
                    log.info("data version requested", extra=fields)
        live = {p.uid for p in snapshot}
        self._sent = {uid: sent for uid, sent in self._sent.items() if uid in live}
        return report

    async def _step(self, one: state.Rollout, raw_status: object, manifest: dict[str, manifests.SourceManifest],
                    by_namespace: dict[str, list[pods.Pod]], acks: dict[str, dict[str, rollout.Ack]], report: Report,
                    writes: _PodWrites) -> Report:
        """One rollout's step: decide, write its status, then queue its pods' requests into ``writes``."""
        namespace, source = one.namespace, one.spec.source
        found = manifest.get(source)
        step = rollout.step(one.spec, one.state, None if found is None else found.for_namespace(namespace),
                            by_namespace.get(namespace, []), acks, self.clock(), self.policy)
        stages = len(one.spec.stages or self.policy.stages)
        new_status = state.status_json(step.state, stages, one, self.clock())
        patch = state.status_patch(one, raw_status, new_status)  # type: ignore[arg-type]
        where = {"namespace": namespace, "source": source, "rollout": one.name}
        if patch is not None:
            result = await self.applier.write_rollout_status(one, patch)
            report = dataclasses.replace(report, status_writes=report.status_writes + (result == "ok"))
            if result != "ok":
                return report  # decide again on fresh state next pass
        for message, fields in step.log:
            log.info(message, extra={**where, **fields})
        if step.rollback is not None:
            metrics.ROLLBACKS.labels(step.rollback).inc()
        for request in step.requests:
            writes.changes[request.pod.uid][request.key] = request.request.to_annotation()
            writes.owners[request.pod.uid] = request.pod
            writes.asked[request.pod.uid].append({**where, "pod": request.pod.name, "data_set": request.name,
                                           "version": request.request.version})
        if step.repository_lkg is not None:
            await self.applier.set_last_known_good(self.repo, source, step.repository_lkg, namespace)
        for event in step.events:
            await self.applier.event(event.pod, event.kind, event.reason, event.message)
        self._metrics(namespace, source, step.state)
        return dataclasses.replace(report, rollouts=report.rollouts + 1, requests=report.requests + len(step.requests))

    @staticmethod
    def _metrics(namespace: str, source: str, current: rollout.State) -> None:
        metrics.ROLLOUT_STAGE.labels(namespace, source).set(current.stage + 1 if current.target else 0)
        for phase in rollout.PHASES:
            metrics.ROLLOUT_PHASE.labels(namespace, source, phase).set(1 if current.phase == phase else 0)
        if current.last_known_good:
            metrics.ROLLOUT_VERSION.labels(namespace, source, "last_known_good", current.last_known_good).set(1)
        if current.target:
            metrics.ROLLOUT_VERSION.labels(namespace, source, "target", current.target).set(1)
        for name, value in (("members", current.members), ("on_target", current.on_target),
                            ("acknowledged", current.acknowledged)):
            metrics.ROLLOUT_PODS.labels(namespace, source, name).set(value)
