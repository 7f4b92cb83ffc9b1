"""Probe results + a pod's current annotations -> the smallest merge patch, or nothing (pure).

Every pod patch is a MODIFIED event delivered to every pod watcher in the cluster, so a patch is
produced only when something a person would see changes:

- ``ok`` writes ``info/<now>/probe: ok`` unless the watchdog already is ``info``;
- ``error`` writes ``error/<since>/probe: <message>`` when the level or the message changes;
  while the level stays ``error`` the time is kept, so it says since when the watchdog fails
  (the eviction plan measures its minimum error duration from it, which survives restarts);
- ``refused`` (a probe annotation we will not follow) writes ``warning/<since>/probe: <why>``:
  visible, never a reason to evict;
- ``unknown`` (unreachable, timeout, no pod IP) writes nothing: no data is not a verdict.

Statuses written by the prober carry the message prefix ``probe:``. That is how a status whose
``probe.autocrane.io/<name>`` annotation was removed is recognised as ours and cleared, while
statuses posted by the pod itself (``autocrane watchdog post``) are left alone.

The health label is recomputed from the merged annotations with :func:`autocrane.watchdogs.health`
and written when it differs; pods with no probe, no status and no label are never touched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from autocrane import watchdogs
from controller import pods

Outcome = Literal["ok", "error", "unknown", "refused"]
MARKER = "probe: "
"""Prefix of every status message the prober writes; marks the status as the controller's."""


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of probing one ``probe.autocrane.io/<name>`` annotation."""

    outcome: Outcome
    message: str = ""
    """Why, for ``error``/``refused``/``unknown`` (``http 503: ...``, ``host 10.0.0.1 is not ...``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What to write on one pod; ``patch`` is the merge patch body."""

    pod: pods.Pod
    annotations: dict[str, str | None]
    """Status annotations to set (None deletes)."""
    health_label: str | None
    """The new label value, or None when the label does not change."""

    @property
    def patch(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": self.pod.resource_version}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        if self.health_label is not None:
            metadata["labels"] = {watchdogs.HEALTH_LABEL: self.health_label}
        return {"metadata": metadata}

    def applied(self) -> pods.Pod:
        """The pod as it will look once the patch is in."""
        label = self.pod.health_label if self.health_label is None else self.health_label
        return self.pod.with_annotations(self.annotations, label)


_LEVELS: dict[Outcome, watchdogs.Level] = {
    "ok": watchdogs.Level.INFO, "error": watchdogs.Level.ERROR, "refused": watchdogs.Level.WARNING,
}


def _wanted(current: str | None, result: ProbeResult, now: dt.datetime, key: str) -> str | None:
    """The value to write for one probed watchdog, or None to leave it as it is."""
    level = _LEVELS.get(result.outcome)
    if level is None:
        return None  # unknown: keep whatever is there
    message = MARKER + (result.message if result.outcome != "ok" else "ok")
    message = message[: watchdogs.MAX_MESSAGE]
    old: watchdogs.Status | None = None
    if current is not None:
        try:
            old = watchdogs.parse_status(current, key)
        except watchdogs.WatchdogError:
            old = None  # unreadable: overwrite with what we know
    if old is not None and old.level == level:
        if level == watchdogs.Level.INFO or old.message == message:
            return None
        since = old.time  # same level, new words: keep the time it started
    else:
        since = now
    return watchdogs.format_status(watchdogs.Status(level, since, message))


def ours(value: str) -> bool:
    """Whether a status value was written by the prober (its message starts with ``probe:``)."""
    parts = value.split("/", 2)
    return len(parts) == 3 and parts[2].startswith(MARKER)


def change(pod: pods.Pod, results: Mapping[str, ProbeResult], now: dt.datetime) -> Change | None:
    """The patch that brings ``pod`` up to date with ``results`` (by watchdog name), or None."""
    current = pod.annotations
    updates: dict[str, str | None] = {}
    for name, result in results.items():
        try:
            key = watchdogs.status_key(name)
        except watchdogs.WatchdogError:
            continue  # a probe name that cannot be a status key; the prober refuses it
        value = _wanted(current.get(key), result, now, key)
        if value is not None:
            updates[key] = value
    probed = set(pod.probes())
    for key, value in current.items():
        if not key.startswith(watchdogs.STATUS_PREFIX) or key == watchdogs.HEALTH_LABEL:
            continue
        if key[len(watchdogs.STATUS_PREFIX):] not in probed and ours(value):
            updates[key] = None  # its probe annotation is gone
    merged = {k: v for k, v in {**current, **updates}.items() if v is not None}
    has_statuses = any(k.startswith(watchdogs.STATUS_PREFIX) for k in merged)
    label: str | None = None
    if has_statuses or probed or pod.health_label is not None:
        wanted_label, _ = watchdogs.health(merged)
        if wanted_label != pod.health_label:
            label = wanted_label
    if not updates and label is None:
        return None
    return Change(pod=pod, annotations=updates, health_label=label)


def level(pod: pods.Pod) -> str:
    """The pod's health as its annotations say (``unknown`` without statuses)."""
    value, _ = watchdogs.health(pod.annotations)
    return value


def error_since(pod: pods.Pod) -> float | None:
    """POSIX time since which the pod has been in error per its statuses, or None if it is not.

    The earliest time among statuses at ``error``; an unreadable status counts as error with no
    time (None is returned only when the pod is not in error at all, so such a pod gives +inf).
    """
    found, problems = watchdogs.statuses(pod.annotations)
    times = [s.time.timestamp() for s in found.values() if s.level == watchdogs.Level.ERROR]
    if times:
        return min(times)
    if problems:
        return float("inf")
    return None
