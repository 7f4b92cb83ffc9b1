"""The writes a pass decides on, as one record the writer executes (pure).

A pass observes, decides, plans and writes. Each decision (:mod:`controller.watchdogs.health`,
:mod:`controller.evictions.decision`, :mod:`controller.datarollouts.decision`) is pure; what it
wants written is collected here, in a :class:`Plan`, and :class:`Writer` (the only one is
``controller.apiserver.writer.Writer``) executes it and says in :class:`Written` what went through.
A pass has several plans, one per step, because later decisions read what earlier writes did:
evictions are planned on the pods as their status patches left them, and a rollout's pod
requests go out only once its ``DataRollout`` status (the stage they belong to) is written.

A plan holds whole records, never dicts keyed by pod uid: :func:`data_patches` merges what every
rollout asks of one pod into one merge patch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from controller import pods
from controller.approllouts import decision as approllout
from controller.evictions import decision as eviction
from controller.watchdogs import health


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A core/v1 Event on a pod (the writer keeps at most one per pod and reason per window)."""

    pod: pods.Pod
    kind: str
    """Normal or Warning."""
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class DataPatch:
    """One merge patch of a pod's data annotations: requests and the acknowledgement mirror."""

    pod: pods.Pod
    annotations: Mapping[str, str | None]
    """``request.data.autocrane.io/*`` and ``status.data.autocrane.io/*`` values to set."""
    asked: tuple[Mapping[str, object], ...] = ()
    """Log fields of each request the patch carries ("data version requested", once written)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RolloutStatus:
    """A merge patch of a ``DataRollout``'s status, carrying its resourceVersion (409: decide again)."""

    namespace: str
    name: str
    patch: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class AppRolloutStatus:
    """An ``AppRollout``'s whole new status, written only on the resourceVersion it was decided on (else:
    decide again). Whole, not merged: a merge patch would keep keys of an old template copy."""

    namespace: str
    name: str
    resource_version: str
    status: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class LastKnownGood:
    """Tell the data repository the last known good version of a source (its init fallback).

    One per rollout: with ``namespace`` the repository keeps it as that namespace's, so two
    namespaces sharing a source never overwrite each other's.
    """

    source: str
    version: str
    namespace: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What to write, in the order the writer writes it (each part only while this replica leads)."""

    rollout_statuses: tuple[RolloutStatus, ...] = ()
    status_changes: tuple[health.Change, ...] = ()
    """Watchdog statuses and the health label, one merge patch per pod."""
    skips: tuple[eviction.Decision, ...] = ()
    """Failing pods held back, each reported with an Event."""
    evictions: tuple[eviction.Decision, ...] = ()
    data: tuple[DataPatch, ...] = ()
    repository: tuple[LastKnownGood, ...] = ()
    app_statuses: tuple[AppRolloutStatus, ...] = ()
    app_actions: tuple[approllout.Action, ...] = ()
    """Writes to group Deployments (release, hold, restore), each with the resourceVersion it was decided on."""
    app_events: tuple[approllout.Event, ...] = ()
    """Events on group Deployments."""
    events: tuple[Event, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Written:
    """What of a plan went through."""

    rollout_statuses: frozenset[tuple[str, str]] = frozenset()
    """(namespace, name) of the DataRollouts whose status was written."""
    status_changes: frozenset[str] = frozenset()
    """uids of the pods whose status patch was written."""
    evicted: tuple[str, ...] = ()
    """``namespace/name`` of the pods evicted (or that would be, in a dry run)."""
    data: frozenset[str] = frozenset()
    """uids of the pods whose data patch was written."""
    app_statuses: frozenset[tuple[str, str]] = frozenset()
    """(namespace, name) of the AppRollouts whose status was written."""
    app_actions: frozenset[tuple[str, str]] = frozenset()
    """(verb, ``namespace/name``) of the Deployment writes that went through."""


class _Named(Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...


class _Decided(Protocol):
    @property
    def status(self) -> _Named | None: ...


DecidedT = TypeVar("DecidedT", bound=_Decided)


def status_landed(decided: Iterable[DecidedT], written: Collection[tuple[str, str]]) -> list[DecidedT]:
    """The decisions that may act: their status write went through (``written``), or they had none.

    The others decide again on fresh state next pass: a step must be stored before it acts, so a crash
    or a conflict never repeats it."""
    return [d for d in decided if d.status is None or (d.status.namespace, d.status.name) in written]


class Writer(Protocol):
    """What a pass needs of the writer (tests fake it with the real one over a fake API)."""

    @property
    def backoff_until(self) -> Mapping[str, float]:
        """Pod uid -> until when its eviction is backed off (a budget refused it)."""
        ...

    async def execute(self, plan: Plan, leading: Callable[[], bool]) -> Written: ...

    async def create_rollout(self, namespace: str, source: str) -> dict[str, Any] | None: ...

    async def create_app_rollout(self, namespace: str, group: str) -> dict[str, Any] | None: ...

    def forget(self, live_uids: Iterable[str]) -> None: ...


def data_patches(mirrored: Iterable[tuple[pods.Pod, Mapping[str, str]]],
                 requests: Iterable[tuple[pods.Pod, str, str, Mapping[str, object]]]) -> tuple[DataPatch, ...]:
    """One patch per pod: its acknowledgement mirror, then the requests (pod, key, value, log fields) of
    every rollout, in the order given."""
    merged: dict[str, tuple[pods.Pod, dict[str, str | None], list[Mapping[str, object]]]] = {}

    def entry(pod: pods.Pod) -> tuple[pods.Pod, dict[str, str | None], list[Mapping[str, object]]]:
        return merged.setdefault(pod.uid, (pod, {}, []))

    for pod, values in mirrored:
        if values:
            entry(pod)[1].update(values)
    for pod, key, value, fields in requests:
        _, annotations, asked = entry(pod)
        annotations[key] = value
        asked.append(fields)
    return tuple(DataPatch(pod, annotations, tuple(asked)) for pod, annotations, asked in merged.values())
