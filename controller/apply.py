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
- Data rollouts (:mod:`controller.datarollouts`): request annotations
  (``request.data.autocrane.io/<name>``, with the mirrored acknowledgement
  ``status.data.autocrane.io/<name>``) as merge patches of those keys only, without a
  ``resourceVersion`` (only the leader writes them, and a merge patch of single keys loses nothing);
  ``DataRollout`` creation and status patches *with* the ``resourceVersion`` (409 -> decide again);
  the repository's last known good (``PUT``). Every rollback gets a Warning Event on the pod.
- Every eviction, block and skip gets an Event on the pod (core/v1, shown by ``kubectl describe``),
  at most one per pod and reason per ``event_window`` seconds, so a pod held for an hour does
  not spam its namespace.

All writes pass the client-side rate limiter of :class:`controller.kubeapi.KubeApi`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from controller import eviction, health, kubeapi, metrics, pods, repository, state

log = logging.getLogger(__name__)
COMPONENT = "autocrane-controller"
REPORTING_CONTROLLER = "autocrane.io/controller"


def _pod_path(pod: pods.Pod) -> str:
    return f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"


@dataclasses.dataclass
class _Backoff:
    until: float
    step: float


class Applier:
    def __init__(self, api: kubeapi.KubeApi, *, identity: str, dry_run: bool = False,
                 grace_period: int | None = None, event_window: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.identity = identity
        self.dry_run = dry_run
        self.grace_period = grace_period
        self.event_window = event_window
        self.clock = clock
        self._backoffs: dict[str, _Backoff] = {}
        self._events: dict[tuple[str, str], float] = {}

    @property
    def backoff_until(self) -> dict[str, float]:
        return {uid: b.until for uid, b in self._backoffs.items()}

    def forget(self, live_uids: Iterable[str]) -> None:
        """Drop memory of pods that no longer exist."""
        live = set(live_uids)
        self._backoffs = {uid: b for uid, b in self._backoffs.items() if uid in live}
        horizon = self.clock() - self.event_window
        self._events = {k: t for k, t in self._events.items() if k[0] in live and t > horizon}

    async def write_status(self, change: health.Change) -> str:
        """Patch one pod's statuses and label; returns ok, conflict, gone or error."""
        pod = change.pod
        try:
            await self.api.request("PATCH", _pod_path(pod), body=change.patch, content_type=kubeapi.MERGE_PATCH)
            result = "ok"
        except kubeapi.ApiError as exc:
            result = {409: "conflict", 404: "gone"}.get(exc.status, "error")
            if result == "error":
                log.warning("status patch failed", extra={"pod": pod.key, "error": str(exc)})
        metrics.STATUS_WRITES.labels(result).inc()
        if result == "ok":
            log.info("watchdog status written", extra={"pod": pod.key, "health": change.health_label,
                                                       "annotations": change.annotations})
        return result

    def _back_off(self, pod: pods.Pod, retry_after: float | None) -> float:
        old = self._backoffs.get(pod.uid)
        step = min(300.0, old.step * 2) if old else 15.0
        delay = max(retry_after or 0.0, step)
        self._backoffs[pod.uid] = _Backoff(self.clock() + delay, step)
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
        except kubeapi.ApiError as exc:
            if exc.status in (404, 409):
                result = "gone"
            elif exc.status == 429 or (exc.status == 500 and "multiple" in str(exc).lower()):
                delay = self._back_off(pod, exc.retry_after)
                result = "blocked"
                message = str(exc.body.get("message") or exc)
                await self.event(pod, "Warning", "EvictionBlocked",
                                 f"eviction refused by the API server ({message}); retrying in {delay:.0f}s")
            else:
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
        now = self.clock()
        last = self._events.get((pod.uid, reason))
        if last is not None and now - last < self.event_window:
            metrics.EVENTS.labels("suppressed").inc()
            return False
        self._events[(pod.uid, reason)] = now
        stamp = pods.rfc3339(now)
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
        except kubeapi.ApiError as exc:
            metrics.EVENTS.labels("error").inc()
            log.warning("event not recorded", extra={"pod": pod.key, "reason": reason, "error": str(exc)})
            return False
        metrics.EVENTS.labels("created").inc()
        return True

    async def write_data(self, pod: pods.Pod, changes: dict[str, str | None]) -> str:
        """Patch a pod's data request / acknowledgement annotations; returns ok, gone or error."""
        try:
            await self.api.request("PATCH", _pod_path(pod), body={"metadata": {"annotations": changes}},
                                   content_type=kubeapi.MERGE_PATCH)
            result = "ok"
        except kubeapi.ApiError as exc:
            result = "gone" if exc.status == 404 else "error"
            if result == "error":
                log.warning("data request patch failed", extra={"pod": pod.key, "error": str(exc)})
        metrics.DATA_WRITES.labels("request", result).inc()
        return result

    async def create_rollout(self, namespace: str, source: str) -> dict[str, Any] | None:
        """Create the DataRollout of ``source``; the object, or None (already there: the next pass reads it)."""
        try:
            created = await self.api.request("POST", state.path(namespace), body=state.new_object(namespace, source))
        except kubeapi.ApiError as exc:
            result = "conflict" if exc.status == 409 else "error"
            metrics.DATA_WRITES.labels("rollout_create", result).inc()
            if result == "error":
                log.warning("DataRollout not created", extra={"namespace": namespace, "source": source,
                                                             "error": str(exc)})
            return None
        metrics.DATA_WRITES.labels("rollout_create", "ok").inc()
        log.info("DataRollout created", extra={"namespace": namespace, "source": source,
                                               "rollout": created.get("metadata", {}).get("name")})
        return created

    async def write_rollout_status(self, rollout: state.Rollout, patch: dict[str, Any]) -> str:
        """Merge-patch a DataRollout's status (carrying its resourceVersion); ok, conflict, gone or error."""
        try:
            await self.api.request("PATCH", state.path(rollout.namespace, rollout.name) + "/status", body=patch,
                                   content_type=kubeapi.MERGE_PATCH)
            result = "ok"
        except kubeapi.ApiError as exc:
            result = {409: "conflict", 404: "gone"}.get(exc.status, "error")
            if result == "error":
                log.warning("DataRollout status not written", extra={
                    "rollout": f"{rollout.namespace}/{rollout.name}", "error": str(exc)})
        metrics.DATA_WRITES.labels("rollout_status", result).inc()
        return result

    async def set_last_known_good(self, repo: repository.Repository, source: str, version: str,
                                  namespace: str | None = None) -> bool:
        where = {"source": source, "version": version, "namespace": namespace}
        try:
            await repo.set_last_known_good(source, version, namespace)
        except repository.RepositoryError as exc:
            metrics.DATA_WRITES.labels("repository_lkg", "error").inc()
            log.warning("last known good not set in the repository", extra={**where, "error": str(exc)})
            return False
        metrics.DATA_WRITES.labels("repository_lkg", "ok").inc()
        log.info("last known good set in the repository", extra=where)
        return True
