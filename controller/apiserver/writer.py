"""The controller's only writer: status patches, policy/v1 evictions and Events on pods.

- Status patches are JSON merge patches of the ``status.autocrane.io/*`` keys and the health label
  only, carrying the ``resourceVersion`` the decision was made on: if the pod changed meanwhile
  (say ``autocrane watchdog post`` wrote a status) the API server answers 409 and the next pass
  decides again on fresh data, so the label never lags a status.
- Evictions go through the Eviction API with a ``uid`` precondition (never the pod that replaced
  the one we judged), so PodDisruptionBudgets are the last word. A 429 (PDB would be violated,
  or its status lags) blocks that pod only: it is backed off (``Retry-After``, else 15 s doubling
  up to 5 min) and the pass goes on. 500 with "multiple PodDisruptionBudgets" is treated alike.
  In dry-run mode the same request is sent with ``dryRun=All``: the API server checks the PDB
  and answers as it would, but nothing is evicted.
- Data rollouts (:mod:`controller.datarollouts.loop`): request annotations
  (``request.data.autocrane.io/<name>``, with the mirrored acknowledgement
  ``status.data.autocrane.io/<name>``) as merge patches of those keys only, without a
  ``resourceVersion`` (only the leader writes them, and a merge patch of single keys loses nothing);
  ``DataRollout`` creation and status patches *with* the ``resourceVersion`` (409 -> decide again);
  the repository's last known good (``PUT``). Every rollback gets a Warning Event on the pod.
- Every eviction, block and skip gets an Event on the pod (core/v1, shown by ``kubectl describe``),
  at most one per pod and reason per ``event_window`` seconds, so a pod held for an hour does
  not spam its namespace.

All writes pass the client-side rate limiter of the controller's :class:`autocrane.kube.Kube`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from autocrane import backoff, clock, errors, kube, untrusted
from controller import metrics, pods
from controller.datarollouts import repository, resource
from controller.evictions import decision as eviction
from controller.watchdogs import health

log = logging.getLogger(__name__)
COMPONENT = "autocrane-controller"
EVICTION_BACKOFF = backoff.Backoff(first=15.0, cap=300.0)
"""Seconds before a blocked eviction (429, or several budgets) of the same pod is tried again, unless
the API server asked for longer (Retry-After)."""
REPORTING_CONTROLLER = "autocrane.io/controller"


def _pod_path(pod: pods.Pod) -> str:
    return f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"


def _result(error: errors.KubeError) -> str:
    """The metric label of a failed update carrying a resourceVersion: conflict, gone or error."""
    if isinstance(error, errors.Conflict):
        return "conflict"
    return "gone" if isinstance(error, errors.NotFound) else "error"


@dataclasses.dataclass(frozen=True, slots=True)
class _Blocked:
    until: float
    """Wall-clock time before which the pod's eviction is not tried again."""
    times: int
    """Consecutive blocks."""


class Applier:
    def __init__(self, api: kube.Api, *, identity: str, dry_run: bool = False,
                 grace_period: int | None = None, event_window: float = 600.0,
                 time: clock.Clock = clock.SYSTEM) -> None:
        self.api = api
        self.identity = identity
        self.dry_run = dry_run
        self.grace_period = grace_period
        self.event_window = event_window
        self.clock = time
        self._backoffs: dict[str, _Blocked] = {}
        self._events: dict[tuple[str, str], float] = {}

    @property
    def backoff_until(self) -> dict[str, float]:
        return {uid: b.until for uid, b in self._backoffs.items()}

    def forget(self, live_uids: Iterable[str]) -> None:
        """Drop memory of pods that no longer exist."""
        live = set(live_uids)
        self._backoffs = {uid: b for uid, b in self._backoffs.items() if uid in live}
        horizon = self.clock.time() - self.event_window
        self._events = {k: t for k, t in self._events.items() if k[0] in live and t > horizon}

    async def write_status(self, change: health.Change) -> str:
        """Patch one pod's statuses and label; returns ok, conflict, gone or error."""
        pod = change.pod
        try:
            await self.api.request("PATCH", _pod_path(pod), body=change.patch, content_type=kube.MERGE_PATCH)
            result = "ok"
        except errors.KubeError as exc:
            result = _result(exc)
            if result == "error":
                log.warning("status patch failed", extra={"pod": pod.key, "error": str(exc)})
        metrics.STATUS_WRITES.labels(result).inc()
        if result == "ok":
            log.info("watchdog status written", extra={"pod": pod.key, "health": change.health_label,
                                                       "annotations": change.annotations})
        return result

    def _back_off(self, pod: pods.Pod, retry_after: float | None) -> float:
        old = self._backoffs.get(pod.uid)
        times = old.times + 1 if old else 1
        delay = max(retry_after or 0.0, EVICTION_BACKOFF.delay(times))
        self._backoffs[pod.uid] = _Blocked(self.clock.time() + delay, times)
        return delay

    async def evict(self, decision: eviction.Decision) -> str:
        """Evict one pod; returns evicted, dry_run, blocked, gone or error."""
        pod = decision.pod
        options: dict[str, Any] = {"preconditions": {"uid": pod.uid}}
        if self.grace_period is not None:
            options["gracePeriodSeconds"] = self.grace_period
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace}, "deleteOptions": options}
        query = {"dryRun": "All"} if self.dry_run else None
        try:
            await self.api.request("POST", _pod_path(pod) + "/eviction", query=query, body=body)
            result = "dry_run" if self.dry_run else "evicted"
        except (errors.NotFound, errors.Conflict):  # gone, or replaced by a pod of another uid
            result = "gone"
        except (errors.TooManyRequests, errors.MultiplePodDisruptionBudgets) as exc:  # a budget says no
            delay = self._back_off(pod, exc.retry_after)
            result = "blocked"
            await self.event(pod, "Warning", "EvictionBlocked",
                             f"eviction refused by the API server ({exc.message}); retrying in {delay:.0f}s")
        except errors.KubeError as exc:
            result = "error"
            log.warning("eviction failed", extra={"pod": pod.key, "error": str(exc)})
        metrics.EVICTIONS.labels(result).inc()
        if result in ("evicted", "dry_run"):
            self._backoffs.pop(pod.uid, None)
            verb = "would evict (dry run)" if self.dry_run else "evicted"
            log.info(f"pod {verb}", extra={"pod": pod.key, "reason": decision.message})
            await self.event(pod, "Normal", "EvictionDryRun" if self.dry_run else "Evicted",
                             f"{verb} by AutoCrane: {decision.message}")
        return result

    async def skip(self, decision: eviction.Decision) -> None:
        metrics.EVICTION_SKIPS.labels(decision.reason).inc()
        kind, reason = ("Warning", "CircuitBreakerOpen") if decision.reason == "circuit-breaker" \
            else ("Normal", "EvictionSkipped")
        await self.event(decision.pod, kind, reason, decision.message)

    async def event(self, pod: pods.Pod, kind: str, reason: str, message: str) -> bool:
        """Create an Event on ``pod`` unless the same reason was reported within the window."""
        now = self.clock.time()
        last = self._events.get((pod.uid, reason))
        if last is not None and now - last < self.event_window:
            metrics.EVENTS.labels("suppressed").inc()
            return False
        self._events[(pod.uid, reason)] = now
        stamp = untrusted.rfc3339(now)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name,
                               "uid": pod.uid},
            "type": kind, "reason": reason, "message": message[:1024], "count": 1,
            "firstTimestamp": stamp, "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": REPORTING_CONTROLLER, "reportingInstance": self.identity[:128],
        }
        try:
            await self.api.request("POST", f"/api/v1/namespaces/{pod.namespace}/events", body=body)
        except errors.KubeError as exc:
            metrics.EVENTS.labels("error").inc()
            log.warning("event not recorded", extra={"pod": pod.key, "reason": reason, "error": str(exc)})
            return False
        metrics.EVENTS.labels("created").inc()
        return True

    async def write_data(self, pod: pods.Pod, changes: dict[str, str | None]) -> str:
        """Patch a pod's data request / acknowledgement annotations; returns ok, gone or error."""
        try:
            await self.api.request("PATCH", _pod_path(pod), body={"metadata": {"annotations": changes}},
                                   content_type=kube.MERGE_PATCH)
            result = "ok"
        except errors.KubeError as exc:
            result = "gone" if isinstance(exc, errors.NotFound) else "error"
            if result == "error":
                log.warning("data request patch failed", extra={"pod": pod.key, "error": str(exc)})
        metrics.DATA_WRITES.labels("request", result).inc()
        return result

    async def create_rollout(self, namespace: str, source: str) -> dict[str, Any] | None:
        """Create the DataRollout of ``source``; the object, or None (already there: the next pass reads it)."""
        try:
            created = await self.api.request("POST", resource.path(namespace),
                                             body=resource.new_object(namespace, source))
        except errors.KubeError as exc:
            result = "conflict" if isinstance(exc, errors.AlreadyExists | errors.Conflict) else "error"
            metrics.DATA_WRITES.labels("rollout_create", result).inc()
            if result == "error":
                log.warning("DataRollout not created", extra={"namespace": namespace, "source": source,
                                                             "error": str(exc)})
            return None
        metrics.DATA_WRITES.labels("rollout_create", "ok").inc()
        log.info("DataRollout created", extra={"namespace": namespace, "source": source,
                                               "rollout": created.get("metadata", {}).get("name")})
        return created

    async def write_rollout_status(self, rollout: resource.Rollout, patch: dict[str, Any]) -> str:
        """Merge-patch a DataRollout's status (carrying its resourceVersion); ok, conflict, gone or error."""
        try:
            await self.api.request("PATCH", resource.path(rollout.namespace, rollout.name) + "/status", body=patch,
                                   content_type=kube.MERGE_PATCH)
            result = "ok"
        except errors.KubeError as exc:
            result = _result(exc)
            if result == "error":
                log.warning("DataRollout status not written", extra={
                    "rollout": f"{rollout.namespace}/{rollout.name}", "error": str(exc)})
        metrics.DATA_WRITES.labels("rollout_status", result).inc()
        return result

    async def set_last_known_good(self, repo: repository.Repository, source: str, version: str) -> bool:
        try:
            await repo.set_last_known_good(source, version)
        except repository.RepositoryError as exc:
            metrics.DATA_WRITES.labels("repository_lkg", "error").inc()
            log.warning("last known good not set in the repository", extra={
                "source": source, "version": version, "error": str(exc)})
            return False
        metrics.DATA_WRITES.labels("repository_lkg", "ok").inc()
        log.info("last known good set in the repository", extra={"source": source, "version": version})
        return True
