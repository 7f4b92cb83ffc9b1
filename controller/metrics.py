"""The controller's Prometheus metrics (``autocrane_controller_*``), on ``autocrane.metrics.REGISTRY``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

from autocrane import metrics

if TYPE_CHECKING:
    import prometheus_client

AREA = "controller"

PROBES = metrics.counter(AREA, "probes", "Watchdog probes by result (ok, error, unknown, refused).", ["result"])
PROBE_DURATION = metrics.histogram(AREA, "probe_duration", "seconds", "Duration of one watchdog HTTP probe.")
PASS_DURATION = metrics.histogram(
    AREA, "pass_duration", "seconds", "Duration of one full pass: probe every pod, write statuses, evict.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
LAST_PASS = metrics.gauge(AREA, "last_pass", "timestamp_seconds", "When the last full pass ended.")
PODS = metrics.gauge(AREA, "pods", "items", "Watched pods by health label value (unknown, info, warning, error).",
                     ["health"])
STATUS_WRITES = metrics.counter(AREA, "status_writes", "Pod status patches by result (ok, conflict, gone, error).",
                                ["result"])
EVICTIONS = metrics.counter(
    AREA, "evictions", "Eviction attempts by result (evicted, blocked, dry_run, gone, error).", ["result"])
EVICTION_SKIPS = metrics.counter(
    AREA, "eviction_skips", "Failing pods held back, by reason (circuit-breaker, cap-per-owner, daemonset...).",
    ["reason"])
BREAKERS_OPEN = metrics.gauge(
    AREA, "circuit_breakers_open", "items", "Owners whose circuit breaker holds evictions (too many pods fail).")
EVENTS = metrics.counter(AREA, "events", "Kubernetes Events by result (created, suppressed, error).", ["result"])
API_REQUESTS = metrics.counter(AREA, "api_requests", "API server requests by verb, resource and HTTP code.",
                               ["verb", "resource", "code"])
API_THROTTLE = metrics.histogram(AREA, "api_throttle_wait", "seconds",
                                 "Time writes waited for the client-side rate limiter.")
INFORMER_PODS = metrics.gauge(AREA, "informer_pods", "items", "Pods in the informer's store.")
INFORMER_RELISTS = metrics.counter(AREA, "informer_relists", "Full LISTs (start, 410 Gone, errors).", ["reason"])
INFORMER_LAST_EVENT = metrics.gauge(AREA, "informer_last_event", "timestamp_seconds",
                                    "When the pod watch last delivered an event or bookmark (lag = now - this).")
LEADER = metrics.gauge(AREA, "leader", "info", "1 while this replica holds the leader Lease, else 0.")
ROLLOUT_STAGE = metrics.gauge(AREA, "rollout_stage", "info",
                              "Stage (1-based) of the running data rollout per namespace and source; 0 when none.",
                              ["namespace", "source"])
ROLLOUT_PHASE = metrics.gauge(AREA, "rollout_phase", "info",
                              "1 on the data rollout's current phase (Idle, Progressing, Succeeded, RolledBack, "
                              "Pinned).",
                              ["namespace", "source", "phase"])
ROLLOUT_VERSION = metrics.gauge(AREA, "rollout_version", "info",
                                "1 per data version in a role: last_known_good, or target (being rolled out).",
                                ["namespace", "source", "role", "version"])
ROLLOUT_PODS = metrics.gauge(AREA, "rollout_pods", "items",
                             "Pods of a data rollout: members, on_target, acknowledged.",
                             ["namespace", "source", "state"])
ROLLBACKS = metrics.counter(AREA, "rollbacks", "Data rollouts rolled back, by reason (watchdog, deadline, abort).",
                            ["reason"])
DATA_WRITES = metrics.counter(
    AREA, "data_writes", "Writes for data rollouts by kind (request, rollout_status, rollout_create, repository_lkg) "
    "and result (ok, conflict, gone, error).", ["kind", "result"])
FAULTS = metrics.counter(
    AREA, "faults", "Pods and rollouts left out of a pass because handling them raised, by step (probe, status, "
    "eviction, acks, rollout...); each is also logged once.", ["step"])
APP_WRITES = metrics.counter(
    AREA, "app_rollout_writes", "Writes for app rollouts by kind (create, status, release, hold, restore) and result "
    "(ok, conflict, gone, error).", ["kind", "result"])
APP_ROLLBACKS = metrics.counter(AREA, "app_rollbacks", "App rollout stages rolled back, by reason (watchdog, "
                                "deadline, abort).", ["reason"])
APP_STAGE_DURATION = metrics.histogram(
    AREA, "app_stage_duration", "seconds", "From a stage's release to its passing the gate (rolled out and baked).",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
APP_PHASE = metrics.gauge(AREA, "app_rollout_phase", "info",
                          "1 on each app rollout group's current phase (Healthy, Progressing, Baking, RolledBack, "
                          "Stuck, Paused).", ["namespace", "group", "phase"])
APP_STAGE = metrics.gauge(AREA, "app_rollout_stage", "info",
                          "Position (1-based) of the app rollout group's current stage among its stages; 0 when no "
                          "stage rolls out.", ["namespace", "group"])
APP_STAGES = metrics.gauge(AREA, "app_rollout_stages", "items", "Stages (distinct stage labels) of an app rollout "
                           "group.", ["namespace", "group"])
APP_STAGE_RELEASED = metrics.gauge(AREA, "app_stage_released", "timestamp_seconds",
                                   "When the app rollout group's current stage was released; 0 when none rolls out.",
                                   ["namespace", "group"])
APP_STAGE_LIMIT = metrics.gauge(AREA, "app_stage_limit", "seconds",
                                "The longest a healthy stage of the group takes: its progress deadline plus its bake.",
                                ["namespace", "group"])
REPOSITORY_READS = metrics.counter(AREA, "repository_reads", "Data repository manifest reads by result (ok, error).",
                                   ["result"])


class ApiObserver:
    """Counts the API server's answers and the writes' waits for the rate limiter (an ``autocrane.kube.Observer``)."""

    def answered(self, verb: str, resource: str, code: int) -> None:
        API_REQUESTS.labels(verb, resource, str(code)).inc()

    def throttled(self, seconds: float) -> None:
        API_THROTTLE.observe(seconds)


# Per workload (the pods' controlling owner, ``Kind/name``): what the alerts and the dashboard need to name
# the object. Rewritten whole each pass (and cleared when this replica stops leading), so an owner that is
# gone, or a former leader's numbers, never linger.
WORKLOAD_LABELS = ("namespace", "owner")
WORKLOAD_PODS = metrics.gauge(AREA, "workload_pods", "items",
                              "Watched pods per owner and health label value (unknown, info, warning, error, none).",
                              [*WORKLOAD_LABELS, "health"])
BREAKER_OPEN = metrics.gauge(AREA, "circuit_breaker_open", "info",
                             "1 per owner whose circuit breaker holds evictions (more than --max-failing-share fail).",
                             WORKLOAD_LABELS)
EVICTIONS_BLOCKED = metrics.gauge(AREA, "evictions_blocked", "items",
                                  "Failing pods per owner whose last eviction a PodDisruptionBudget refused "
                                  "(in their back-off).", WORKLOAD_LABELS)
UNANSWERED = metrics.gauge(AREA, "watchdog_unanswered", "seconds",
                           "Per owner, the longest time one watchdog of a running pod has had no answer (unknown) "
                           "in consecutive passes; 0 when every watchdog answers.", WORKLOAD_LABELS)
UNANSWERED_ERRORS = metrics.counter(AREA, "unanswered_errors",
                                    "Probes recorded as error because the watchdog had no answer for longer than "
                                    "--unknown-error-seconds.")
ROLLOUT_STAGE_STARTED = metrics.gauge(AREA, "rollout_stage_started", "timestamp_seconds",
                                      "When the running data rollout's current stage started; 0 when none runs.",
                                      ["namespace", "source"])
ROLLOUT_DEADLINE = metrics.gauge(AREA, "rollout_progress_deadline", "seconds",
                                 "Seconds a stage of the data rollout may wait for acknowledgements.",
                                 ["namespace", "source"])
ROLLOUT_BAKE = metrics.gauge(AREA, "rollout_bake", "seconds",
                             "Seconds a stage of the data rollout bakes once acknowledged.", ["namespace", "source"])
PER_WORKLOAD = (WORKLOAD_PODS, BREAKER_OPEN, EVICTIONS_BLOCKED, UNANSWERED)


def workload(namespace: str, owner_kind: str | None, owner_name: str | None) -> tuple[str, str]:
    """The (namespace, owner) labels of a pod's workload; a bare pod's owner is ``Pod``."""
    return namespace, "Pod" if owner_kind is None else f"{owner_kind}/{owner_name}"


PER_DATA_ROLLOUT = (ROLLOUT_STAGE, ROLLOUT_PHASE, ROLLOUT_VERSION, ROLLOUT_PODS, ROLLOUT_STAGE_STARTED,
                    ROLLOUT_DEADLINE, ROLLOUT_BAKE)
"""Gauges labelled first by (namespace, source) of a DataRollout."""
PER_APP_ROLLOUT = (APP_PHASE, APP_STAGE, APP_STAGES, APP_STAGE_RELEASED, APP_STAGE_LIMIT)
"""Gauges labelled first by (namespace, group) of an AppRollout."""


def clear_workloads() -> None:
    for gauge in PER_WORKLOAD:
        gauge.clear()


def clear_leader_gauges() -> None:
    """Everything only the leader knows: a replica that lost the Lease would go on exporting its last
    values, and alerts (which take the max over replicas) would fire on them for good."""
    for gauge in (*PER_WORKLOAD, *PER_DATA_ROLLOUT, *PER_APP_ROLLOUT):
        gauge.clear()


def keep_only(gauges: Iterable[prometheus_client.Gauge], live: Collection[tuple[str, str]]) -> None:
    """Remove the label sets whose (namespace, name) is not in ``live``: a deleted rollout's gauges would
    stay at their last values (RolledBack, say), and its alerts fire for good."""
    _remove_where(gauges, lambda key: key not in live)


def drop(gauges: Iterable[prometheus_client.Gauge], key: tuple[str, str]) -> None:
    """Remove every label set of one (namespace, name), before it is set anew (a version that changed)."""
    _remove_where(gauges, lambda found: found == key)


def _remove_where(gauges: Iterable[prometheus_client.Gauge], remove: Callable[[tuple[str, str]], bool]) -> None:
    for gauge in gauges:
        label_sets = {tuple(sample.labels.values()) for family in gauge.collect() for sample in family.samples}
        for labels in label_sets:
            if len(labels) >= 2 and remove((labels[0], labels[1])):
                gauge.remove(*labels)
