"""The controller's only writer: it executes the plans passes make (:mod:`controller.plan`).

:meth:`Writer.execute` writes a plan's parts in order: DataRollout statuses (before the pod
requests they imply), watchdog status patches (64 at a time), skips and evictions, data patches,
the repository's last known good, Events; each part only while this replica leads (``leading``),
except the reports of what was held (skips and Events). Each write is one of the methods below.

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
- App rollouts (:mod:`controller.approllouts.loop`): ``AppRollout`` creation and status patches with
  the ``resourceVersion`` (409 -> decide again); writes to a group's Deployments, each carrying the
  resourceVersion the step was decided on: release and hold are merge patches of ``spec.paused``
  only, restore is a JSON patch (``test`` of the resourceVersion, ``replace /spec/template``,
  ``add /spec/paused false``). Never ``replicas`` or ``strategy``. Events on the Deployments, at
  most one per Deployment, reason and template per ``event_window`` seconds.
- Every eviction, block and skip gets an Event on the pod (core/v1, shown by ``kubectl describe``),
  at most one per pod and reason per ``event_window`` seconds, so a pod held for an hour does
  not spam its namespace.

All writes pass the client-side rate limiter of the controller's :class:`autocrane.kube.Kube`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from autocrane import approllouts, backoff, bodies, clock, errors, kube, untrusted
from controller import metrics, plan, pods
from controller.apiserver import fanout
from controller.approllouts import decision as approllout
from controller.datarollouts import repository, resource
from controller.evictions import decision as eviction
from controller.watchdogs import health

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K", bound=tuple[str, ...])
COMPONENT = "autocrane-controller"
WRITERS = 64
"""Status patches in flight at once (the write rate is the rate limiter's, ``--qps``)."""
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


class Repository(Protocol):
    """The data repository's one write (``controller.datarollouts.repository.Repository`` has it)."""

    async def set_last_known_good(self, source: str, version: str, namespace: str | None = None) -> None: ...


class Writer:
    """Executes plans (a ``controller.plan.Writer``); every write of the controller goes through here."""

    def __init__(self, api: kube.Api, *, identity: str, dry_run: bool = False,
                 grace_period: int | None = None, event_window: float = 600.0,
                 repository: Repository | None = None, time: clock.Clock = clock.SYSTEM) -> None:
        self.api = api
        self.repository = repository
        self.identity = identity
        self.dry_run = dry_run
        self.grace_period = grace_period
        self.event_window = event_window
        self.clock = time
        self._backoffs: dict[str, _Blocked] = {}
        self._events: dict[tuple[str, str], float] = {}
        """(pod uid, reason) -> when it was last reported."""
        self._deployment_events: dict[tuple[str, str, str], float] = {}
        """(Deployment uid, reason, template hash) -> when it was last reported."""

    @property
    def backoff_until(self) -> dict[str, float]:
        return {uid: b.until for uid, b in self._backoffs.items()}

    async def execute(self, todo: plan.Plan, leading: Callable[[], bool]) -> plan.Written:
        """Write ``todo`` in its order (see the module docstring); what went through."""
        rollouts = set()
        for status in todo.rollout_statuses:
            if leading() and await self._safely("rollout-status", self.write_rollout_status(status)) == "ok":
                rollouts.add((status.namespace, status.name))

        async def write_status(change: health.Change) -> bool:
            return leading() and await self._safely("status", self.write_status(change)) == "ok"

        written = await fanout.bounded_map(write_status, todo.status_changes, WRITERS)
        statuses = frozenset(c.pod.uid for c, ok in zip(todo.status_changes, written, strict=True) if ok)
        for decision in todo.skips:
            await self._safely("skip", self.skip(decision))
        evicted = []
        for decision in todo.evictions:
            if not leading():
                break
            if await self._safely("eviction", self.evict(decision)) in ("evicted", "dry_run"):
                evicted.append(decision.pod.key)
        data = set()
        for patch in todo.data:
            if leading() and await self._safely("data", self.write_data(patch.pod, dict(patch.annotations))) == "ok":
                data.add(patch.pod.uid)
                for fields in patch.asked:
                    log.info("data version requested", extra=dict(fields))
        for lkg in todo.repository:
            if leading():
                await self._safely("repository", self.set_last_known_good(lkg))
        apps = set()
        for app in todo.app_statuses:
            if leading() and await self._safely("app-status", self.write_app_status(app)) == "ok":
                apps.add((app.namespace, app.name))
        actions = set()
        for action in todo.app_actions:
            if leading() and await self._safely("deployment", self.write_deployment(action)) == "ok":
                actions.add((action.verb, action.deployment.key))
        for app_event in todo.app_events:
            d = app_event.deployment
            # Per template: a restore retried for the same rejected template adds no Event, a second release
            # or rollback (another template) within the window has its own.
            await self._safely("event", self._event(
                self._deployment_events, (d.uid, app_event.reason, d.template_hash),
                {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": d.namespace, "name": d.name,
                 "uid": d.uid}, app_event.kind, app_event.reason, app_event.message))
        for event in todo.events:
            await self._safely("event", self.event(event.pod, event.kind, event.reason, event.message))
        return plan.Written(frozenset(rollouts), statuses, tuple(evicted), frozenset(data), frozenset(apps),
                            frozenset(actions))

    @staticmethod
    async def _safely(what: str, write: Awaitable[T]) -> T | str:
        """``await write``; a bug in one write (an API error is not one: each write handles those) is logged
        and counted, and the others go on."""
        try:
            return await write
        except Exception as error:
            metrics.FAULTS.labels(f"write-{what}").inc()
            log.exception("a write failed unexpectedly; the others go on", extra={"write": what,
                                                                                  "error": str(error)[:200]})
            return "error"

    def forget(self, live_uids: Iterable[str]) -> None:
        """Drop memory of pods that no longer exist."""
        live = set(live_uids)
        self._backoffs = {uid: b for uid, b in self._backoffs.items() if uid in live}
        horizon = self.clock.time() - self.event_window
        self._events = {k: t for k, t in self._events.items() if k[0] in live and t > horizon}
        self._deployment_events = {k: t for k, t in self._deployment_events.items() if t > horizon}

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
        return await self._event(self._events, (pod.uid, reason), {
            "apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
            kind, reason, message)

    async def _event(self, reported: dict[K, float], key: K, involved: bodies.ObjectReference, kind: str,
                     reason: str, message: str) -> bool:
        """Create an Event on ``involved`` unless ``key`` was ``reported`` within the window."""
        now = self.clock.time()
        last = reported.get(key)
        if last is not None and now - last < self.event_window:
            metrics.EVENTS.labels("suppressed").inc()
            return False
        reported[key] = now
        stamp = untrusted.rfc3339(now)
        namespace, name = involved.get("namespace", ""), involved.get("name", "")
        body: bodies.Event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": involved,
            "type": kind, "reason": reason, "message": message[:1024], "count": 1,
            "firstTimestamp": stamp, "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": REPORTING_CONTROLLER, "reportingInstance": self.identity[:128],
        }
        try:
            await self.api.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except errors.KubeError as exc:
            metrics.EVENTS.labels("error").inc()
            log.warning("event not recorded", extra={"object": f"{involved.get('kind')} {namespace}/{name}",
                                                     "reason": reason, "error": str(exc)})
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
        return await self._create("DataRollout", resource.path(namespace), resource.new_object(namespace, source),
                                  metrics.DATA_WRITES.labels, "rollout_create",
                                  {"namespace": namespace, "source": source})

    async def _create(self, kind: str, path: str, body: Mapping[str, Any],
                      count: Callable[[str, str], Any], write: str, where: dict[str, Any]) -> dict[str, Any] | None:
        """POST one of our objects: counted as ``write`` (ok, conflict or error) and logged; None unless made."""
        try:
            created = await self.api.request("POST", path, body=body)
        except errors.KubeError as exc:
            result = "conflict" if isinstance(exc, errors.AlreadyExists | errors.Conflict) else "error"
            count(write, result).inc()
            if result == "error":
                log.warning(f"{kind} not created", extra={**where, "error": str(exc)})
            return None
        count(write, "ok").inc()
        log.info(f"{kind} created", extra={**where, "name": created.get("metadata", {}).get("name")})
        return created

    async def write_rollout_status(self, status: plan.RolloutStatus) -> str:
        """Merge-patch a DataRollout's status (carrying its resourceVersion); ok, conflict, gone or error."""
        return await self._patch_status("DataRollout", resource.path(status.namespace, status.name),
                                        dict(status.patch), kube.MERGE_PATCH, metrics.DATA_WRITES.labels,
                                        "rollout_status", {"rollout": f"{status.namespace}/{status.name}"})

    async def set_last_known_good(self, lkg: plan.LastKnownGood) -> bool:
        where = {"source": lkg.source, "version": lkg.version, "namespace": lkg.namespace}
        if self.repository is None:
            raise RuntimeError("this writer has no data repository to tell the last known good")
        try:
            await self.repository.set_last_known_good(lkg.source, lkg.version, lkg.namespace)
        except repository.RepositoryError as exc:
            metrics.DATA_WRITES.labels("repository_lkg", "error").inc()
            log.warning("last known good not set in the repository", extra={**where, "error": str(exc)})
            return False
        metrics.DATA_WRITES.labels("repository_lkg", "ok").inc()
        log.info("last known good set in the repository", extra=where)
        return True

    async def create_app_rollout(self, namespace: str, group: str) -> dict[str, Any] | None:
        """Create the AppRollout of ``group``; the object, or None (already there: the next pass reads it)."""
        return await self._create("AppRollout", approllouts.path(namespace), approllouts.new_object(namespace, group),
                                  metrics.APP_WRITES.labels, "create", {"namespace": namespace, "group": group})

    async def write_app_status(self, status: plan.AppRolloutStatus) -> str:
        """Replace an AppRollout's status if its resourceVersion is still the one decided on; ok, conflict,
        gone or error."""
        operations = [{"op": "test", "path": "/metadata/resourceVersion", "value": status.resource_version},
                      {"op": "add", "path": "/status", "value": dict(status.status)}]
        return await self._patch_status("AppRollout", approllouts.path(status.namespace, status.name), operations,
                                        kube.JSON_PATCH, metrics.APP_WRITES.labels, "status",
                                        {"approllout": f"{status.namespace}/{status.name}"})

    async def _patch_status(self, kind: str, path: str, body: object, content_type: str,
                            count: Callable[[str, str], Any], write: str, where: Mapping[str, str]) -> str:
        """PATCH the status of the object at ``path``; its result counted as ``write`` and logged if an error."""
        try:
            await self.api.request("PATCH", path + "/status", body=body, content_type=content_type)
            result = "ok"
        except errors.KubeError as exc:
            # A JSON patch's failed test is a 422: the object changed since it was read, as a 409 says.
            tested = content_type == kube.JSON_PATCH and isinstance(exc, errors.Invalid)
            result = "conflict" if tested else _result(exc)
            if result == "error":
                log.warning(f"{kind} status not written", extra={**where, "error": str(exc)})
        count(write, result).inc()
        return result

    async def write_deployment(self, action: approllout.Action) -> str:
        """Release, hold or restore one Deployment, on the resourceVersion it was judged on; ok, conflict, gone
        or error. Only ``spec.paused`` is written, and ``spec.template`` by a restore."""
        d = action.deployment
        where = f"/apis/apps/v1/namespaces/{d.namespace}/deployments/{d.name}"
        try:
            if action.verb == "restore":
                operations = [{"op": "test", "path": "/metadata/resourceVersion", "value": d.resource_version},
                              {"op": "replace", "path": "/spec/template", "value": dict(action.template or {})},
                              {"op": "add", "path": "/spec/paused", "value": False}]
                await self.api.request("PATCH", where, body=operations, content_type=kube.JSON_PATCH)
            else:
                body = {"metadata": {"resourceVersion": d.resource_version},
                        "spec": {"paused": action.verb == "hold"}}
                await self.api.request("PATCH", where, body=body, content_type=kube.MERGE_PATCH)
            result = "ok"
        except errors.Invalid:  # the JSON patch's test failed: the Deployment changed since it was judged
            result = "conflict"
        except errors.KubeError as exc:
            result = _result(exc)
            if result == "error":
                log.warning("Deployment not written", extra={"deployment": d.key, "verb": action.verb,
                                                             "error": str(exc)})
        metrics.APP_WRITES.labels(action.verb, result).inc()
        if result == "ok":
            log.info("deployment written", extra={"deployment": d.key, "verb": action.verb,
                                                  "template": d.template_hash})
        return result
