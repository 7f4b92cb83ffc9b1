"""One data rollout's next step: versions + pods + acknowledgements + watchdogs + now -> actions (pure).

A rollout is per namespace and repository source (a ``DataRollout`` object, :mod:`controller.datarollouts.resource`).
Its *members* are the namespace's pods that declare ``data.autocrane.io/<name>: <source>``; its
*dependents* are pods that list the source in ``store.autocrane.io/deps`` (they consume it
indirectly, through a member). Every pass, :func:`step` decides from scratch on what it is given:

- **Start.** With no rollout running, the candidate is the manifest's newest version when it is
  newer than the last known good (LKG) and not held back. Only the newest: a rollout is never
  started for a version that a newer one already replaces. A rollout that runs is finished (or
  rolled back) before the next one starts, so two versions landing close together never skip
  the stages.
- **Stages.** ``1``, ``25%``, ``100%`` of the members by default (the ``DataRollout`` may list its
  own). Stage *k* wants that many members requesting the target; missing ones are chosen among
  Running members not in error, by name, so every replica chooses the same pods. Pods already on
  the target stay on it; the request annotation on the pods *is* the record of who is in.
- **Gate.** A stage passes when every member on the target has acknowledged it (the
  datadeployer's ``GET /status`` says the version is live) and then no error watchdog appeared
  on those pods or on the dependents for the bake time, counted from the later of the stage's
  start and the last ``deployedAt`` (the swap itself, not the request). An error since the
  rollout started fails it at once; an error older than the rollout (already there) holds it
  without failing. No acknowledgement within the progress deadline fails it too.
- **Rollback.** On failure every member goes back to the LKG, the version is held back (never
  tried again until a newer version appears, or someone promotes it by hand), and an Event on the
  pod names the watchdog and its message.
- **Completion.** When the last stage has baked, the target becomes the LKG, and the repository
  is told (``PUT /v1/sources/<source>/last-known-good``), so init containers fall back to it.
- **New pods**, and every member not chosen for the target, get the LKG.
- **Manual controls** (``DataRollout`` spec fields, ``autocrane rollout``): ``promote`` passes the
  current stage's gate now (or, with no rollout running, retries a held version); ``abort``
  rolls back as a failure would; ``pinVersion`` puts every member on that version and stops
  rolling out until it is removed. ``promote`` and ``abort`` are tokens: each new value acts
  once, and the status records the last one seen.

Restart and failover safety: the stage, its start time, the held versions and the tokens seen
live in the ``DataRollout`` status; which pods are in lives in their request annotations; bake
time runs from the datadeployer's ``deployedAt``. A new leader therefore resumes the same stage
with the same pods and clock. The caller writes the new status *before* the pod requests it
implies, so a crash in between re-derives the same requests, never an earlier stage.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence

from autocrane import datasets, inpod, keys, manifests, untrusted, watchdogs
from controller import pods

DEPS_ANNOTATION = keys.STORE_DEPS
DEFAULT_STAGES = ("1", "25%", "100%")
_STAGE = re.compile(r"(?P<n>[0-9]{1,6})(?P<pct>%?)")  # fullmatch: "$" would accept "1\n"
MAX_HELD = 20

IDLE, PROGRESSING, SUCCEEDED, ROLLED_BACK, PINNED = "Idle", "Progressing", "Succeeded", "RolledBack", "Pinned"
PHASES = (IDLE, PROGRESSING, SUCCEEDED, ROLLED_BACK, PINNED)


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """Controller-wide defaults; a ``DataRollout`` spec may override each."""

    stages: tuple[str, ...] = DEFAULT_STAGES
    bake_seconds: float = 600.0
    progress_deadline: float = 600.0
    """Seconds a stage may wait for acknowledgements before it fails."""


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """What people ask of one rollout (the ``DataRollout`` spec)."""

    source: str
    stages: tuple[str, ...] | None = None
    bake_seconds: float | None = None
    progress_deadline: float | None = None
    pin_version: str | None = None
    promote: str | None = None
    abort: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class State:
    """What the controller remembers between passes (the ``DataRollout`` status)."""

    phase: str = IDLE
    last_known_good: str | None = None
    target: str | None = None
    stage: int = 0
    """Index into the stages while a rollout runs."""
    started: float | None = None
    """When the running rollout started (POSIX seconds)."""
    stage_started: float | None = None
    held: tuple[str, ...] = ()
    """Versions rolled back, never started again automatically."""
    observed_promote: str | None = None
    observed_abort: str | None = None
    message: str = ""
    members: int = 0
    on_target: int = 0
    acknowledged: int = 0
    """Members whose datadeployer reports the version they were asked for."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """Write ``request.data.autocrane.io/<name>`` on ``pod``."""

    pod: pods.Pod
    name: str
    request: manifests.DataRequest

    @property
    def key(self) -> str:
        return keys.REQUEST_DATA_PREFIX + self.name


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    pod: pods.Pod
    kind: str
    """Normal or Warning."""
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    state: State
    requests: tuple[Request, ...] = ()
    events: tuple[Event, ...] = ()
    repository_lkg: str | None = None
    """Tell the repository this is the last known good (it says otherwise)."""
    log: tuple[tuple[str, dict[str, object]], ...] = ()
    """Transitions worth a log line: (message, fields)."""
    rollback: str | None = None
    """Why this step rolled back, if it did: ``watchdog``, ``deadline`` or ``abort`` (a metric label)."""


# --- reading pods ---------------------------------------------------------------------------------

def data_names(pod: pods.Pod, source: str) -> tuple[str, ...]:
    """The pod's data-set names that come from ``source`` (valid declarations only, ``autocrane.datasets``)."""
    found, _ = datasets.declared(pod.annotations)
    return tuple(sorted(name for name, data_set in found.items() if data_set.source == source))


def sources(pod: pods.Pod) -> set[str]:
    """Every source the pod validly declares a data set from."""
    found, _ = datasets.declared(pod.annotations)
    return {data_set.source for data_set in found.values()}


def depends_on(pod: pods.Pod, source: str) -> bool:
    return source in {s.strip() for s in pod.annotations.get(DEPS_ANNOTATION, "").split(",")}


def requested(pod: pods.Pod, name: str) -> manifests.DataRequest | None:
    """The pod's current request for data set ``name`` (None when absent or unreadable)."""
    value = pod.annotations.get(keys.REQUEST_DATA_PREFIX + name)
    if value is None:
        return None
    try:
        return manifests.parse_request(value)
    except manifests.ManifestError:
        return None


def _errors(pod: pods.Pod) -> list[tuple[str, watchdogs.Status | None]]:
    """The pod's error-level watchdogs: (name, status), status None when unreadable."""
    found, problems = watchdogs.statuses(pod.annotations)
    out: list[tuple[str, watchdogs.Status | None]] = [
        (name, s) for name, s in sorted(found.items()) if s.level == watchdogs.Level.ERROR]
    return out + [(name, None) for name in sorted(problems)]


# --- stages ---------------------------------------------------------------------------------------

def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """Validate ``["1", "25%", "100%"]``-style stages (counts or percentages, the last one 100%)."""
    if not stages:
        raise ValueError("stages: at least one stage")
    for text in stages:
        match = _STAGE.fullmatch(str(text))
        if not match or int(match["n"]) == 0 or (match["pct"] and int(match["n"]) > 100):
            raise ValueError(f"stage {text!r}: expected a pod count like 1 or a percentage like 25%")
    if stages[-1] != "100%":
        raise ValueError(f"stages: the last stage must be 100%, not {stages[-1]!r}")
    return tuple(str(s) for s in stages)


def stage_counts(stages: Sequence[str], members: int) -> list[int]:
    """Members on the target at each stage: percentages round up, never more than all, never fewer
    than the stage before."""
    counts: list[int] = []
    for text in stages:
        match = _STAGE.fullmatch(text)
        assert match is not None
        n = int(match["n"])
        wanted = math.ceil(members * n / 100) if match["pct"] else n
        counts.append(min(members, max(wanted, counts[-1] if counts else 0)))
    return counts


# --- the step ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class _Member:
    pod: pods.Pod
    names: tuple[str, ...]
    version: str | None
    """Requested now (the first data set's request)."""
    ack: inpod.Ack | None


def _members(pod_list: Iterable[pods.Pod], source: str, acks: Mapping[str, Mapping[str, inpod.Ack]]) -> list[_Member]:
    out = []
    for pod in pod_list:
        names = data_names(pod, source)
        if not names or pod.terminating:
            continue
        request = requested(pod, names[0])
        out.append(_Member(pod, names, request.version if request else None, acks.get(pod.uid, {}).get(names[0])))
    return sorted(out, key=lambda m: m.pod.name)


def _candidate(manifest: manifests.SourceManifest, lkg: str | None, held: Sequence[str]) -> str | None:
    latest = manifest.latest
    if latest is None or latest.version == lkg or latest.version in held:
        return None
    ids = [v.version for v in manifest.versions]
    if lkg in ids and ids.index(lkg) > ids.index(latest.version):
        return None
    return latest.version


def _first_error(candidates: Iterable[pods.Pod], since: float) -> tuple[pods.Pod, str, str, bool] | None:
    """The first (pod, watchdog, message, new) in error; ``new`` when it started at or after ``since``."""
    old: tuple[pods.Pod, str, str, bool] | None = None
    for pod in candidates:
        for name, status in _errors(pod):
            if status is None:
                return pod, name, "unreadable status", True
            if status.time.timestamp() >= since:
                return pod, name, status.message, True
            old = old or (pod, name, status.message, False)
    return old


def _rolled_back(state: State, members: list[_Member], why: str, culprit: pods.Pod | None,
                 reason: str) -> tuple[State, list[Event]]:
    target = state.target or ""
    held = (*tuple(v for v in state.held if v != target)[-(MAX_HELD - 1):], target)
    message = f"{target} rolled back at stage {state.stage + 1}: {why}; held back until a newer version appears"
    events = [Event(culprit, "Warning", reason, f"data version {target} rolled back to {state.last_known_good}: "
                    f"{why}")] if culprit is not None else []
    new = dataclasses.replace(state, phase=ROLLED_BACK, target=None, stage=0, started=None, stage_started=None,
                              held=held, message=message)
    return new, events


def step(spec: Spec, state: State, manifest: manifests.SourceManifest | None, pod_list: Sequence[pods.Pod],
         acks: Mapping[str, Mapping[str, inpod.Ack]], now: float, policy: Policy = Policy()) -> Step:
    """The next state and actions for one rollout (see the module docstring).

    ``acks``: pod uid -> data-set name -> what its datadeployer reports (pods that did not answer
    are absent: no acknowledgement). ``now``: POSIX seconds.
    """
    source = spec.source
    members = _members(pod_list, source, acks)
    dependents = [p for p in pod_list if not p.terminating and depends_on(p, source) and not data_names(p, source)]
    logs: list[tuple[str, dict[str, object]]] = []
    events: list[Event] = []
    if manifest is None:
        new = dataclasses.replace(state, message=f"source {source!r} is not in the data repository's manifest",
                                  members=len(members))
        return Step(new)
    lkg = state.last_known_good if manifest.find(state.last_known_good or "") else manifest.last_known_good
    held = tuple(v for v in state.held if manifest.find(v))
    new = dataclasses.replace(state, last_known_good=lkg, held=held)
    stages = spec.stages or policy.stages
    bake = policy.bake_seconds if spec.bake_seconds is None else spec.bake_seconds
    deadline = policy.progress_deadline if spec.progress_deadline is None else spec.progress_deadline
    fields: dict[str, object] = {"source": source}

    promote = bool(spec.promote) and spec.promote != state.observed_promote
    abort = bool(spec.abort) and spec.abort != state.observed_abort
    new = dataclasses.replace(new, observed_promote=spec.promote or state.observed_promote,
                              observed_abort=spec.abort or state.observed_abort)

    pin = spec.pin_version
    if pin:
        if manifest.find(pin) is None:
            new = dataclasses.replace(new, message=f"pinned version {pin} is not in the repository; nothing changed")
            return _finish(new, members, manifest, None, set(), events, logs)
        if new.phase != PINNED:
            logs.append(("data rollout pinned", {**fields, "version": pin, "abandoned": new.target}))
        new = dataclasses.replace(new, phase=PINNED, target=None, stage=0, started=None, stage_started=None,
                                  message=f"pinned to {pin} by hand; remove pinVersion to resume rollouts")
        return _finish(new, members, manifest, pin, None, events, logs)
    if new.phase == PINNED:
        new = dataclasses.replace(new, phase=IDLE, message="unpinned")

    if abort and new.target:
        logs.append(("data rollout aborted", {**fields, "version": new.target, "stage": new.stage}))
        new, more = _rolled_back(new, members, "aborted by hand", None, "DataRolledBack")
        events += more
        new = dataclasses.replace(new, message=new.message.replace("held back", "held back (aborted by hand)"))
        return _finish(new, members, manifest, None, set(), events, logs, rollback="abort")

    if promote and not new.target and manifest.latest and manifest.latest.version in new.held:
        retried = manifest.latest.version
        new = dataclasses.replace(new, held=tuple(v for v in new.held if v != retried))
        logs.append(("held data version released by hand", {**fields, "version": retried}))
        promote = False

    if not new.target:
        candidate = _candidate(manifest, lkg, new.held)
        if candidate is None or not members or lkg is None:
            if candidate is None and new.phase == PROGRESSING:
                new = dataclasses.replace(new, phase=IDLE)
            if not members:
                new = dataclasses.replace(new, message="no pod uses this source")
            elif lkg is None:
                new = dataclasses.replace(new, message="the repository has no last known good version yet")
            return _finish(new, members, manifest, None, set(), events, logs)
        new = dataclasses.replace(new, phase=PROGRESSING, target=candidate, stage=0, started=now,
                                  stage_started=now, message="")
        logs.append(("data rollout started", {**fields, "version": candidate, "from": lkg}))
        logs.append(("data rollout stage started", {**fields, "version": candidate, "stage": 0}))

    target = new.target
    assert target is not None and new.started is not None and new.stage_started is not None
    if manifest.find(target) is None:
        logs.append(("data rollout abandoned", {**fields, "version": target, "why": "left the repository"}))
        new = dataclasses.replace(new, phase=IDLE, target=None, stage=0, started=None, stage_started=None,
                                  message=f"{target} is no longer in the repository; rollout abandoned")
        return _finish(new, members, manifest, None, set(), events, logs)

    while True:
        counts = stage_counts(stages, len(members))
        stage = min(new.stage, len(counts) - 1)
        on = {m.pod.uid for m in members if m.version == target}
        failure = _first_error([m.pod for m in members if m.pod.uid in on] + dependents, math.floor(new.started))
        chosen = set(on)
        if len(chosen) < counts[stage] and failure is None:
            spare = [m for m in members if m.pod.uid not in chosen and m.pod.phase == "Running" and m.pod.pod_ip
                     and not _errors(m.pod)]
            chosen |= {m.pod.uid for m in spare[:counts[stage] - len(chosen)]}
        in_stage = [m for m in members if m.pod.uid in chosen]
        if failure is not None and failure[3]:
            pod, watchdog, message, _ = failure
            why = f"watchdog {watchdog!r} of pod {pod.name} is in error ({message})"
            logs.append(("data rollout rolled back", {**fields, "version": target, "stage": stage,
                                                      "pod": pod.name, "watchdog": watchdog}))
            new, more = _rolled_back(new, members, why, pod, "DataRolledBack")
            events += more
            return _finish(new, members, manifest, None, set(), events, logs, rollback="watchdog")

        waiting = [m for m in in_stage if m.ack is None or m.ack.version != target]
        short = len(in_stage) < counts[stage]
        since = max([new.stage_started] + [m.ack.deployed_at for m in in_stage
                                           if m.ack is not None and m.ack.deployed_at is not None])
        label = f"stage {stage + 1}/{len(counts)}"
        if failure is not None:
            message = (f"{label}: held while watchdog {failure[1]!r} of pod {failure[0].name} is in error "
                       "(since before the rollout)")
        elif (waiting or short) and not promote:
            if now - new.stage_started > deadline:
                culprit = waiting[0].pod if waiting else None
                detail = waiting[0].ack.error if waiting and waiting[0].ack and waiting[0].ack.error else None
                why = (f"pod {culprit.name} did not acknowledge it within {deadline:.0f}s"
                       + (f" ({detail})" if detail else "") if culprit is not None else
                       f"only {len(in_stage)} of {counts[stage]} pods could take it within {deadline:.0f}s")
                logs.append(("data rollout rolled back", {**fields, "version": target, "stage": stage,
                                                          "why": "progress deadline"}))
                new, more = _rolled_back(new, members, why, culprit, "DataRolloutDeadline")
                events += more
                return _finish(new, members, manifest, None, set(), events, logs, rollback="deadline")
            message = f"{label}: waiting for " + (
                f"{len(waiting)} pod(s) to acknowledge {target}" if waiting else
                f"pods to take {target} ({len(in_stage)} of {counts[stage]} can)")
        elif not promote and now - since < bake:
            message = f"{label}: baking until {untrusted.rfc3339(since + bake)}"
        else:
            message = ""
        passed = promote or (failure is None and not waiting and not short and now - since >= bake)
        new = dataclasses.replace(new, stage=stage, message=message)
        if not passed:
            return _finish(new, members, manifest, target, chosen, events, logs)
        if promote:
            logs.append(("data rollout stage promoted by hand", {**fields, "version": target, "stage": stage}))
            promote = False
        if stage + 1 >= len(counts):
            logs.append(("data rollout succeeded", {**fields, "version": target, "previous": lkg}))
            new = dataclasses.replace(new, phase=SUCCEEDED, last_known_good=target, target=None, stage=0,
                                      started=None, stage_started=None,
                                      message=f"{target} rolled out to every pod and baked; it is the last known good")
            return _finish(new, members, manifest, None, set(), events, logs)
        new = dataclasses.replace(new, stage=stage + 1, stage_started=now)
        logs.append(("data rollout stage started", {**fields, "version": target, "stage": stage + 1}))
        # the next stage's pods are chosen in the same pass; its gate cannot pass before they acknowledge


def _finish(state: State, members: list[_Member], manifest: manifests.SourceManifest, want_target: str | None,
            chosen: set[str] | None, events: list[Event], logs: list[tuple[str, dict[str, object]]],
            rollback: str | None = None) -> Step:
    """The requests that put each member where ``state`` says, and the repository's LKG if it differs.

    ``want_target`` with ``chosen`` (uids): those members get it; with ``chosen`` None (a pin) every
    member gets it. Everyone else gets the LKG.
    """
    requests: list[Request] = []
    lkg = state.last_known_good
    on_target = acked = 0
    for member in members:
        version = want_target if want_target and (chosen is None or member.pod.uid in chosen) else lkg
        if version is None:
            continue
        on_target += version == want_target
        acked += member.ack is not None and member.ack.version == version
        found = manifest.find(version)
        wanted = manifests.DataRequest(version, found.sha256 if found else None)
        for name in member.names:
            if requested(member.pod, name) != wanted:
                requests.append(Request(member.pod, name, wanted))
    state = dataclasses.replace(state, members=len(members), on_target=on_target if state.target else 0,
                                acknowledged=acked)
    repository = lkg if lkg is not None and manifest.last_known_good != lkg else None
    return Step(state, tuple(requests), tuple(events), repository, tuple(logs), rollback)


# --- acknowledgements ---------------------------------------------------------------------------

def ack_annotations(pod: pods.Pod, pod_acks: Mapping[str, inpod.Ack]) -> dict[str, str]:
    """``status.data.autocrane.io/<name>`` values that mirror what the datadeployer reports, where they differ."""
    changes = {}
    for name, ack in pod_acks.items():
        if ack.version is None or not pod.annotations.get(keys.DATA_PREFIX + name):
            continue
        value, key = inpod.mirror_value(ack), keys.STATUS_DATA_PREFIX + name
        if pod.annotations.get(key) != value:
            changes[key] = value
    return changes
