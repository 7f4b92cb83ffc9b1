"""One data rollout's next step: versions + pods + acknowledgements + watchdogs + now -> actions (pure).

A rollout is per namespace and repository source (a ``DataRollout`` object,
:mod:`controller.datarollouts.resource`).
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

The state cannot be torn: :class:`State` holds exactly one of :class:`Idle`, :class:`Progressing`
(which always has its target, stage and both clocks) and :class:`Pinned`, and :func:`step` hands
each to the function for that phase (:func:`_pinned`, :func:`_idle`, :func:`_progressing`, which
judges one stage at a time with :func:`_stage`). Who takes part (members, dependents, their
requests and errors) is read by :mod:`controller.datarollouts.participants`.

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
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any, ClassVar

from autocrane import inpod, keys, manifests, untrusted
from controller import plan, pods
from controller.datarollouts import participants

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
class Idle:
    """Nothing rolls out; ``phase`` says how the last rollout ended."""

    phase: str = IDLE
    """``Idle`` (none ran, or it was abandoned), ``Succeeded`` or ``RolledBack``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Progressing:
    """A version rolls out. It always has its target, its stage and both clocks: it cannot be torn."""

    target: str
    stage: int
    """Index into the stages."""
    started: float
    """When the rollout started (POSIX seconds): an error older than this holds it, a newer one fails it."""
    stage_started: float
    """When the current stage started: its progress deadline counts from here, and its bake time no earlier."""
    phase: ClassVar[str] = PROGRESSING


@dataclasses.dataclass(frozen=True, slots=True)
class Pinned:
    """Every member is on ``spec.pinVersion`` and nothing rolls out until the pin is removed."""

    phase: ClassVar[str] = PINNED


Progress = Idle | Progressing | Pinned
"""What the rollout is doing: exactly one of the three."""
_IDLE = Idle()


@dataclasses.dataclass(frozen=True, slots=True)
class State:
    """What the controller remembers between passes (the ``DataRollout`` status)."""

    progress: Progress = _IDLE
    last_known_good: str | None = None
    held: tuple[str, ...] = ()
    """Versions rolled back, never started again automatically."""
    observed_promote: str | None = None
    observed_abort: str | None = None
    message: str = ""
    members: int = 0
    on_target: int = 0
    acknowledged: int = 0
    """Members whose datadeployer reports the version they were asked for."""

    @property
    def phase(self) -> str:
        return self.progress.phase

    @property
    def target(self) -> str | None:
        return self.progress.target if isinstance(self.progress, Progressing) else None

    @property
    def stage(self) -> int:
        return self.progress.stage if isinstance(self.progress, Progressing) else 0

    @property
    def started(self) -> float | None:
        return self.progress.started if isinstance(self.progress, Progressing) else None

    @property
    def stage_started(self) -> float | None:
        return self.progress.stage_started if isinstance(self.progress, Progressing) else None


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
class Step:
    state: State
    requests: tuple[Request, ...] = ()
    events: tuple[plan.Event, ...] = ()
    repository_lkg: str | None = None
    """Tell the repository this is the last known good (it says otherwise)."""
    log: tuple[tuple[str, dict[str, object]], ...] = ()
    """Transitions worth a log line: (message, fields)."""
    rollback: str | None = None
    """Why this step rolled back, if it did: ``watchdog``, ``deadline`` or ``abort`` (a metric label)."""


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
        if match is None:
            raise ValueError(f"stage {text!r}: expected a pod count like 1 or a percentage like 25% (check_stages)")
        n = int(match["n"])
        wanted = math.ceil(members * n / 100) if match["pct"] else n
        counts.append(min(members, max(wanted, counts[-1] if counts else 0)))
    return counts


# --- the step ---------------------------------------------------------------------------------------

def _candidate(manifest: manifests.SourceManifest, lkg: str | None, held: Sequence[str]) -> str | None:
    latest = manifest.latest
    if latest is None or latest.version == lkg or latest.version in held:
        return None
    ids = [v.version for v in manifest.versions]
    if lkg in ids and ids.index(lkg) > ids.index(latest.version):
        return None
    return latest.version


@dataclasses.dataclass(frozen=True, slots=True)
class _Failure:
    pod: pods.Pod
    watchdog: str
    message: str
    new: bool
    """It started at or after the rollout did (so it fails the rollout; an older one only holds it)."""


def _first_error(candidates: Iterable[pods.Pod], since: float) -> _Failure | None:
    """The first error watchdog among ``candidates``: a new one (or an unreadable status) first."""
    old: _Failure | None = None
    for pod in candidates:
        for name, status in participants.errors_of(pod):
            if status is None:
                return _Failure(pod, name, "unreadable status", True)
            if status.time.timestamp() >= since:
                return _Failure(pod, name, status.message, True)
            old = old or _Failure(pod, name, status.message, False)
    return old


@dataclasses.dataclass(slots=True)
class _Work:
    """One step being built: what it was given, the state so far and what it implies."""

    spec: Spec
    manifest: manifests.SourceManifest
    members: list[participants.Member]
    dependents: list[pods.Pod]
    now: float
    policy: Policy
    state: State
    promote: bool
    """A new promote token that has not acted yet in this step."""
    events: list[plan.Event] = dataclasses.field(default_factory=list)
    logs: list[tuple[str, dict[str, object]]] = dataclasses.field(default_factory=list)

    @property
    def stages(self) -> tuple[str, ...]:
        return self.spec.stages or self.policy.stages

    @property
    def bake(self) -> float:
        return self.policy.bake_seconds if self.spec.bake_seconds is None else self.spec.bake_seconds

    @property
    def deadline(self) -> float:
        return self.policy.progress_deadline if self.spec.progress_deadline is None else self.spec.progress_deadline

    def log(self, message: str, **fields: object) -> None:
        self.logs.append((message, {"source": self.spec.source, **fields}))

    def set(self, **changes: Any) -> None:
        self.state = dataclasses.replace(self.state, **changes)

    def roll_back(self, current: Progressing, why: str, culprit: pods.Pod | None, reason: str,
                  rollback: str) -> Step:
        """Every member back to the LKG, the target held back, an Event on the culprit."""
        target = current.target
        held = (*tuple(v for v in self.state.held if v != target)[-(MAX_HELD - 1):], target)
        if culprit is not None:
            self.events.append(plan.Event(culprit, "Warning", reason, f"data version {target} rolled back to "
                                     f"{self.state.last_known_good}: {why}"))
        aborted = " (aborted by hand)" if rollback == "abort" else ""
        self.set(progress=Idle(ROLLED_BACK), held=held, message=f"{target} rolled back at stage {current.stage + 1}: "
                 f"{why}; held back{aborted} until a newer version appears")
        return self.finish(rollback=rollback)

    def finish(self, want_target: str | None = None, chosen: Set[str] | None = frozenset(),
               rollback: str | None = None) -> Step:
        """The requests that put each member where the state says, and the repository's LKG if it differs.

        ``want_target`` with ``chosen`` (uids): those members get it; with ``chosen`` None (a pin)
        every member gets it. Everyone else gets the LKG.
        """
        requests: list[Request] = []
        lkg = self.state.last_known_good
        on_target = acked = 0
        for member in self.members:
            version = want_target if want_target and (chosen is None or member.pod.uid in chosen) else lkg
            if version is None:
                continue
            on_target += version == want_target
            acked += member.ack is not None and member.ack.version == version
            found = self.manifest.find(version)
            wanted = manifests.DataRequest(version, found.sha256 if found else None)
            requests += [Request(member.pod, name, wanted) for name in member.names
                         if participants.requested(member.pod, name) != wanted]
        self.set(members=len(self.members), on_target=on_target if self.state.target else 0, acknowledged=acked)
        repository = lkg if lkg is not None and self.manifest.last_known_good != lkg else None
        return Step(self.state, tuple(requests), tuple(self.events), repository, tuple(self.logs), rollback)


def step(spec: Spec, state: State, manifest: manifests.SourceManifest | None, pod_list: Sequence[pods.Pod],
         acks: Mapping[str, Mapping[str, inpod.Ack]], now: float, policy: Policy = Policy()) -> Step:
    """The next state and actions for one rollout (see the module docstring).

    ``acks``: pod uid -> data-set name -> what its datadeployer reports (pods that did not answer
    are absent: no acknowledgement). ``now``: POSIX seconds.
    """
    source = spec.source
    taking_part = participants.of(pod_list, source, acks)
    if manifest is None:
        return Step(dataclasses.replace(state, message=f"source {source!r} is not in the data repository's manifest",
                                        members=len(taking_part)))
    dependents = participants.dependents(pod_list, source)
    lkg = state.last_known_good if manifest.find(state.last_known_good or "") else manifest.last_known_good
    observed = dataclasses.replace(
        state, last_known_good=lkg, held=tuple(v for v in state.held if manifest.find(v)),
        observed_promote=spec.promote or state.observed_promote, observed_abort=spec.abort or state.observed_abort)
    work = _Work(spec, manifest, taking_part, dependents, now, policy, observed,
                 promote=bool(spec.promote) and spec.promote != state.observed_promote)
    if spec.pin_version:
        return _pinned(work, spec.pin_version)
    if isinstance(work.state.progress, Pinned):
        work.set(progress=_IDLE, message="unpinned")
    current = work.state.progress
    if not isinstance(current, Progressing):
        return _idle(work)
    if bool(spec.abort) and spec.abort != state.observed_abort:
        work.log("data rollout aborted", version=current.target, stage=current.stage)
        return work.roll_back(current, "aborted by hand", None, "DataRolledBack", "abort")
    return _progressing(work, current)


def _pinned(work: _Work, pin: str) -> Step:
    """Every member on ``pin``; nothing rolls out (a pin the repository does not have changes nothing)."""
    if work.manifest.find(pin) is None:
        work.set(message=f"pinned version {pin} is not in the repository; nothing changed")
        return work.finish()
    if not isinstance(work.state.progress, Pinned):
        work.log("data rollout pinned", version=pin, abandoned=work.state.target)
    work.set(progress=Pinned(), message=f"pinned to {pin} by hand; remove pinVersion to resume rollouts")
    return work.finish(pin, None)


def _idle(work: _Work) -> Step:
    """Start a rollout of the newest version when there is one to start (promote releases a held one)."""
    latest = work.manifest.latest
    if work.promote and latest and latest.version in work.state.held:
        work.set(held=tuple(v for v in work.state.held if v != latest.version))
        work.log("held data version released by hand", version=latest.version)
        work.promote = False
    lkg = work.state.last_known_good
    candidate = _candidate(work.manifest, lkg, work.state.held)
    if candidate is None or not work.members or lkg is None:
        if not work.members:
            work.set(message="no pod uses this source")
        elif lkg is None:
            work.set(message="the repository has no last known good version yet")
        return work.finish()
    current = Progressing(candidate, 0, work.now, work.now)
    work.set(progress=current, message="")
    work.log("data rollout started", version=candidate, **{"from": lkg})
    work.log("data rollout stage started", version=candidate, stage=0)
    return _progressing(work, current)


def _progressing(work: _Work, current: Progressing) -> Step:
    """Judge the current stage; each stage that passes starts the next one in the same pass."""
    if work.manifest.find(current.target) is None:
        work.log("data rollout abandoned", version=current.target, why="left the repository")
        work.set(progress=_IDLE, message=f"{current.target} is no longer in the repository; rollout abandoned")
        return work.finish()
    while True:
        judged = _stage(work, current)
        if isinstance(judged, Step):
            return judged
        current = judged  # the next stage's pods are chosen now; its gate cannot pass before they acknowledge


def _stage(work: _Work, current: Progressing) -> Step | Progressing:
    """One stage's gate: a Step when the pass ends here, else the next stage (this one passed)."""
    counts = stage_counts(work.stages, len(work.members))
    stage, target = min(current.stage, len(counts) - 1), current.target
    on = {m.pod.uid for m in work.members if m.version == target}
    failure = _first_error([m.pod for m in work.members if m.pod.uid in on] + work.dependents,
                           math.floor(current.started))
    if failure is not None and failure.new:
        why = f"watchdog {failure.watchdog!r} of pod {failure.pod.name} is in error ({failure.message})"
        work.log("data rollout rolled back", version=target, stage=stage, pod=failure.pod.name,
                 watchdog=failure.watchdog)
        return work.roll_back(current, why, failure.pod, "DataRolledBack", "watchdog")
    chosen = on if failure is not None else _chosen(work.members, on, counts[stage])
    in_stage = [m for m in work.members if m.pod.uid in chosen]
    waiting = [m for m in in_stage if m.ack is None or m.ack.version != target]
    short = len(in_stage) < counts[stage]
    since = max([current.stage_started] + [m.ack.deployed_at for m in in_stage
                                           if m.ack is not None and m.ack.deployed_at is not None])
    label = f"stage {stage + 1}/{len(counts)}"
    if failure is not None:
        message = (f"{label}: held while watchdog {failure.watchdog!r} of pod {failure.pod.name} is in error "
                   "(since before the rollout)")
    elif (waiting or short) and not work.promote:
        if work.now - current.stage_started > work.deadline:
            return _deadline(work, current, stage, waiting, f"only {len(in_stage)} of {counts[stage]} pods")
        message = f"{label}: waiting for " + (
            f"{len(waiting)} pod(s) to acknowledge {target}" if waiting else
            f"pods to take {target} ({len(in_stage)} of {counts[stage]} can)")
    elif not work.promote and work.now - since < work.bake:
        message = f"{label}: baking until {untrusted.rfc3339(since + work.bake)}"
    else:
        message = ""
    work.set(progress=dataclasses.replace(current, stage=stage), message=message)
    if not (work.promote or (failure is None and not waiting and not short and work.now - since >= work.bake)):
        return work.finish(target, chosen)
    return _passed(work, current, stage, len(counts))


def _chosen(members: Sequence[participants.Member], on: Set[str], wanted: int) -> set[str]:
    """The members on the target, and as many more as the stage wants: Running ones not in error, by name."""
    chosen = set(on)
    spare = [m for m in members if m.pod.uid not in chosen and m.pod.phase == "Running" and m.pod.pod_ip
             and not participants.errors_of(m.pod)]
    return chosen | {m.pod.uid for m in spare[:max(0, wanted - len(chosen))]}


def _deadline(work: _Work, current: Progressing, stage: int, waiting: Sequence[participants.Member],
              how_many: str) -> Step:
    """The stage's progress deadline passed before every pod took and acknowledged the target."""
    culprit = waiting[0].pod if waiting else None
    detail = waiting[0].ack.error if waiting and waiting[0].ack and waiting[0].ack.error else None
    deadline = f"{work.deadline:.0f}s"
    why = (f"pod {culprit.name} did not acknowledge it within {deadline}" + (f" ({detail})" if detail else "")
           if culprit is not None else f"{how_many} could take it within {deadline}")
    work.log("data rollout rolled back", version=current.target, stage=stage, why="progress deadline")
    return work.roll_back(current, why, culprit, "DataRolloutDeadline", "deadline")


def _passed(work: _Work, current: Progressing, stage: int, stages: int) -> Step | Progressing:
    """The stage's gate passed (or was promoted): the rollout succeeded, or the next stage starts now."""
    if work.promote:
        work.log("data rollout stage promoted by hand", version=current.target, stage=stage)
        work.promote = False
    if stage + 1 >= stages:
        work.log("data rollout succeeded", version=current.target, previous=work.state.last_known_good)
        work.set(progress=Idle(SUCCEEDED), last_known_good=current.target,
                 message=f"{current.target} rolled out to every pod and baked; it is the last known good")
        return work.finish()
    following = Progressing(current.target, stage + 1, current.started, work.now)
    work.set(progress=following)
    work.log("data rollout stage started", version=current.target, stage=stage + 1)
    return following
