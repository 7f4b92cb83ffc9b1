"""One controller pass, and the loop that repeats it while this replica leads.

A pass is level-triggered and has four steps, each observe -> decide -> plan -> write: it reads
the informers' current pods and probes every probe annotation; :mod:`controller.watchdogs.health`
decides the status patches, and the writer writes that plan; :mod:`controller.evictions.decision`
plans evictions on the pods as those patches left them, and the writer carries them out; then
every data rollout takes its step (:mod:`controller.datarollouts.loop`, when a data repository is
configured), then every staged app rollout (:mod:`controller.approllouts.loop`, unless turned
off), all on that one snapshot and its probe results. The plans are :mod:`controller.plan`'s records; the only
writer is ``controller.apiserver.writer.Writer``. Everything that reads time reads the clock the
pass was given, so a whole pass runs on a manual clock in tests.

A pod (or a rollout) whose handling raises is left out of the rest of that pass and logged once
(:mod:`controller.isolation`); every other pod is still probed, written, evicted and rolled out.
Nothing in a pass depends on the previous one except the eviction streak counts, which only
ever delay an eviction when lost; rollout state is read from the cluster every pass.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import logging
import random
from collections.abc import Iterable, Sequence
from typing import Protocol

from autocrane import clock, keys
from controller import isolation, metrics, plan, pods
from controller.apiserver import informer, leader
from controller.approllouts import loop as approllouts
from controller.datarollouts import loop as datarollouts
from controller.evictions import decision as eviction
from controller.watchdogs import health, probing, unanswered

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """What one pass did (for logs and tests)."""

    pods: int
    probed: int
    status_writes: int
    evicted: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    breakers: int
    data_requests: int = 0
    rollout_writes: int = 0
    app_writes: int = 0
    """AppRollout statuses and Deployment writes."""
    faults: int = 0
    """Pods and rollouts left out of this pass because handling them raised (each logged once)."""


class Prober(Protocol):
    """What a pass needs of the prober (``controller.watchdogs.probing.Prober``)."""

    async def probe_all(self, snapshot: Iterable[pods.Pod], probe: probing.Probe | None = None
                        ) -> dict[str, dict[str, health.ProbeResult]]: ...

    async def probe_pod(self, pod: pods.Pod) -> dict[str, health.ProbeResult]: ...

    def take_durations(self) -> list[float]: ...


class Controller:
    def __init__(self, informers: Sequence[informer.PodInformer], prober: Prober, writer: plan.Writer,
                 policy: eviction.Policy, *, elector: leader.LeaderElector | None = None,
                 interval: float = 10.0, rollouts: datarollouts.DataRollouts | None = None,
                 apps: approllouts.AppRollouts | None = None, unknown_error_seconds: float | None = None,
                 time: clock.Clock = clock.SYSTEM) -> None:
        self.informers = list(informers)
        self.prober = prober
        self.writer = writer
        self.policy = policy
        self.elector = elector
        self.interval = interval
        self.rollouts = rollouts
        self.apps = apps
        self.clock = time
        self.streaks: dict[str, eviction.Streak] = {}
        self.unknown_error_seconds = unknown_error_seconds
        """None: a watchdog without an answer stays unknown; else seconds after which it is an error."""
        self.unanswered: dict[unanswered.Key, float] = {}
        """Since when each watchdog of a probeable pod has had no answer (:mod:`controller.watchdogs.unanswered`)."""
        self.faults = isolation.Faults()
        self.last_pass = 0.0
        """Monotonic time at the end of the last pass (0: none yet)."""

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def snapshot(self) -> list[pods.Pod]:
        return [pod for i in self.informers for pod in i.snapshot()]

    def _watchdogs(self, pod: pods.Pod, results: dict[str, health.ProbeResult], now: dt.datetime
                   ) -> tuple[health.Change | None, tuple[plan.Event, ...]]:
        """One pod's status patch (if any), and a Warning Event for each probe annotation refused."""
        refused = []
        for name, result in results.items():
            metrics.PROBES.labels(result.outcome).inc()
            if result.outcome == "refused":
                refused.append(plan.Event(pod, "Warning", "ProbeRefused",
                                          f"{keys.PROBE_PREFIX}{name} not probed: {result.message}"))
        return health.change(pod, results, now), tuple(refused)

    def _watchdog_plan(self, snapshot: Sequence[pods.Pod], results: dict[str, dict[str, health.ProbeResult]],
                       now: dt.datetime) -> plan.Plan:
        changes: list[health.Change] = []
        events: list[plan.Event] = []
        for pod in snapshot:
            nothing: tuple[health.Change | None, tuple[plan.Event, ...]] = (None, ())
            change, refused = self.faults.call(pod.uid, "status", functools.partial(
                self._watchdogs, pod, results.get(pod.uid, {}), now), nothing, pod=pod.key)
            changes += [change] if change is not None else []
            events += refused
        return plan.Plan(status_changes=tuple(changes), events=tuple(events))

    async def _probe(self, pod: pods.Pod) -> dict[str, health.ProbeResult]:
        return await self.faults.acall(pod.uid, "probe", lambda: self.prober.probe_pod(pod), {}, pod=pod.key)

    def _judged(self, pod: pods.Pod) -> bool:
        """Whether the eviction plan can read the pod's health (it parses the statuses again, the same way)."""
        def readable() -> bool:
            health.level(pod)
            health.error_since(pod)
            return True

        return self.faults.call(pod.uid, "eviction", readable, False, pod=pod.key)

    def _eviction_plan(self, snapshot: list[pods.Pod]) -> eviction.Plan:
        now = self.clock.time()
        self.streaks = eviction.observe(self.streaks, snapshot, now)
        decided = eviction.plan(snapshot, self.streaks, self.policy, now, self.writer.backoff_until)
        metrics.BREAKERS_OPEN.set(len(decided.breakers))
        for breaker in decided.breakers:
            log.warning("circuit breaker holds evictions", extra={
                "namespace": breaker.namespace, "owner": f"{breaker.owner.kind}/{breaker.owner.name}",
                "failing": breaker.failing, "total": breaker.total})
        return decided

    def _unknown_policy(self, snapshot: Sequence[pods.Pod], probed: dict[str, dict[str, health.ProbeResult]]
                        ) -> dict[str, dict[str, health.ProbeResult]]:
        """Track watchdogs without an answer; with ``unknown_error_seconds``, a long silence becomes an error."""
        now = self.clock.time()
        self.unanswered = unanswered.observe(self.unanswered, snapshot, probed, now)
        results = unanswered.as_errors(probed, self.unanswered, now, self.unknown_error_seconds)
        converted = sum(1 for uid, by_name in results.items() for name, result in by_name.items()
                        if result.outcome == "error" and probed[uid][name].outcome == "unknown")
        if converted:
            metrics.UNANSWERED_ERRORS.inc(converted)
        return results

    def _workload_metrics(self, snapshot: Sequence[pods.Pod], decided: eviction.Plan) -> None:
        """The per-owner gauges, rewritten whole at once (no await in between: a scrape sees all or none)."""
        now = self.clock.time()
        silent = unanswered.longest(self.unanswered, snapshot, now)
        backoff = self.writer.backoff_until
        longest: dict[tuple[str, str], float] = {}
        metrics.clear_workloads()
        for pod in snapshot:
            where = metrics.workload(pod.namespace, pod.owner.kind if pod.owner else None,
                                     pod.owner.name if pod.owner else None)
            metrics.WORKLOAD_PODS.labels(*where, pod.health_label or "none").inc()
            longest[where] = max(longest.get(where, 0.0), silent.get(pod.uid, 0.0))
            if backoff.get(pod.uid, 0.0) > now and eviction.is_failing(pod):
                metrics.EVICTIONS_BLOCKED.labels(*where).inc()
        for where, seconds in longest.items():
            metrics.UNANSWERED.labels(*where).set(seconds)
        for breaker in decided.breakers:
            metrics.BREAKER_OPEN.labels(*metrics.workload(breaker.namespace, breaker.owner.kind,
                                                          breaker.owner.name)).set(1)

    async def run_pass(self) -> Report:
        self.faults.begin()
        snapshot = self.snapshot()
        probed = await self.prober.probe_all(snapshot, self._probe)
        for seconds in self.prober.take_durations():
            metrics.PROBE_DURATION.observe(seconds)
        results = self._unknown_policy(snapshot, probed)
        statuses = self._watchdog_plan(snapshot, results, clock.utcnow(self.clock))
        written = await self.writer.execute(statuses, lambda: self.leading)
        applied = {c.pod.uid: c.applied() for c in statuses.status_changes if c.pod.uid in written.status_changes}
        updated = [applied.get(pod.uid, pod) for pod in snapshot]
        by_health = collections.Counter(p.health_label or "none" for p in updated)
        for value in ("unknown", "info", "warning", "error", "none"):
            metrics.PODS.labels(value).set(by_health.get(value, 0))

        usable = [pod for pod in updated if pod.uid not in self.faults.failed and self._judged(pod)]
        decided = self.faults.call("(every pod)", "eviction-plan", lambda: self._eviction_plan(usable),
                                   eviction.Plan())
        evictions = await self.writer.execute(plan.Plan(skips=decided.skipped, evictions=decided.evict),
                                              lambda: self.leading)
        self._workload_metrics(updated, decided)
        data = datarollouts.Report()
        rollouts = self.rollouts
        if rollouts is not None and self.leading:
            data = await self.faults.acall("(every rollout)", "data-rollouts",
                                           lambda: rollouts.run_pass(usable, lambda: self.leading),
                                           datarollouts.Report())
        app = approllouts.Report()
        apps = self.apps
        if apps is not None and self.leading:
            app = await self.faults.acall("(every group)", "app-rollouts",
                                          lambda: apps.run_pass(usable, results, lambda: self.leading),
                                          approllouts.Report())
        self.writer.forget(p.uid for p in snapshot)
        faults = len(self.faults.failed) + data.faults + app.faults
        self.faults.settle()
        return Report(pods=len(snapshot), probed=len(results), status_writes=len(applied), evicted=evictions.evicted,
                      skipped=tuple((d.pod.key, d.reason) for d in decided.skipped), breakers=len(decided.breakers),
                      data_requests=data.requests, rollout_writes=data.status_writes,
                      app_writes=app.status_writes + app.deployment_writes, faults=faults)

    async def run(self) -> None:
        """Pass after pass while synced and leading; a failing pass is logged, never fatal."""
        for i in self.informers:
            await i.synced.wait()
        log.info("informers synced", extra={"pods": len(self.snapshot())})
        while True:
            if self.elector is not None and not self.elector.is_leader:
                self.streaks = {}  # a new term starts counting afresh
                self.unanswered = {}
                metrics.clear_leader_gauges()  # the leader's numbers are the ones to alert on
                await self.elector.leading.wait()
            started = self.clock.monotonic()
            try:
                report = await self.run_pass()
                metrics.PASS_DURATION.observe(self.clock.monotonic() - started)
                level = logging.INFO if (report.status_writes or report.evicted or report.skipped or report.faults
                                         or report.data_requests or report.rollout_writes or report.app_writes
                                         ) else logging.DEBUG
                log.log(level, "pass done", extra={**dataclasses.asdict(report),
                                                   "seconds": round(self.clock.monotonic() - started, 3)})
            except Exception:
                log.exception("pass failed")
            self.last_pass = self.clock.monotonic()
            metrics.LAST_PASS.set(self.clock.time())
            elapsed = self.last_pass - started
            await self.clock.sleep(max(0.0, self.interval * random.uniform(0.9, 1.1) - elapsed))
