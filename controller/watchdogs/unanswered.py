"""Watchdogs that give no answer: since when, and the policy that makes a long silence an error (pure).

A probe that gets no answer (timeout, connection refused) is ``unknown``, and ``unknown`` writes
nothing (:mod:`controller.watchdogs.health`): no data is not a verdict. So a hung app, whose
watchdog endpoint no longer answers at all, would never be evicted. The C# original treated a
timeout as an error; here that is a policy, off by default (``--unknown-error-seconds``): once
one watchdog of a running pod has had no answer for that long in consecutive passes, its result
becomes ``error`` ("no answer for more than N s"), which is then written, counted and, after the
eviction policy's own ``--error-observations`` and ``--error-seconds``, evicted like any error.

Only pods that can be probed count (Running, not terminating, with an IP): a pending or
terminating pod has no answer for reasons a restart does not fix. The first time without an
answer is kept in memory, like the eviction streaks: a controller restart or a new leader
starts counting again, which can only delay the error, never hasten it. Whatever the policy,
the longest silence per workload is exported (``autocrane_controller_watchdog_unanswered_seconds``)
for the alert that fires when a watchdog stays unknown for long.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller import pods
from controller.watchdogs import health

Key = tuple[str, str]
"""(pod uid, watchdog name)."""
Results = Mapping[str, Mapping[str, health.ProbeResult]]
"""Probe results by pod uid, then watchdog name (as ``Prober.probe_all`` returns them)."""


def observe(since: Mapping[Key, float], snapshot: Iterable[pods.Pod], results: Results, now: float
            ) -> dict[Key, float]:
    """Since when each watchdog of a probeable pod has had no answer, after this pass's ``results``.

    A watchdog that answered (ok, error) or was refused drops out; one still silent keeps its
    first time; a pod gone or no longer probeable drops out with all its watchdogs.
    """
    updated: dict[Key, float] = {}
    for pod in snapshot:
        if not pod.probeable:
            continue
        for name, result in results.get(pod.uid, {}).items():
            if result.outcome == "unknown":
                updated[(pod.uid, name)] = since.get((pod.uid, name), now)
    return updated


def as_errors(results: Results, since: Mapping[Key, float], now: float, limit: float | None
              ) -> dict[str, dict[str, health.ProbeResult]]:
    """``results`` with each ``unknown`` that has lasted at least ``limit`` seconds turned into ``error``.

    ``limit`` None (the default policy) changes nothing. The message names the limit, not the
    elapsed time, so it stays the same from pass to pass and the status is written once.
    """
    changed: dict[str, dict[str, health.ProbeResult]] = {uid: dict(by_name) for uid, by_name in results.items()}
    if limit is None:
        return changed
    for (uid, name), first in since.items():
        result = changed.get(uid, {}).get(name)
        if result is not None and result.outcome == "unknown" and now - first >= limit:
            changed[uid][name] = health.ProbeResult(
                "error", f"no answer for more than {limit:g}s ({result.message or 'unknown'})")
    return changed


def longest(since: Mapping[Key, float], snapshot: Iterable[pods.Pod], now: float) -> dict[str, float]:
    """Per pod uid, the seconds its longest-silent watchdog has had no answer (pods with none are absent)."""
    uids = {pod.uid for pod in snapshot}
    worst: dict[str, float] = {}
    for (uid, _), first in since.items():
        if uid in uids:
            worst[uid] = max(worst.get(uid, 0.0), now - first)
    return worst
