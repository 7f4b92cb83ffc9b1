"""One group's next step: Deployments + ReplicaSets + pods + watchdogs + now -> status and actions (pure).

See docs/app-rollouts.md for the behaviour; in short, every pass, from scratch:

1. records are brought up to date with the Deployments seen (new ones adopt their template as
   last known good once rolled out; gone ones are forgotten), and the tokens are read;
2. *pending* templates are those neither last known good nor rejected; the lowest stage with one
   is the current stage, and higher stages are held;
3. a stage not released yet is released (the status first, then the unpause);
4. a released stage is judged: abort, error watchdogs (rollback, or Stuck when the old revision
   fails too), the progress deadline, then the bake on its new-revision pods; a stage that passes
   makes its templates the last known good and the next stage is released in the same pass.

A step is a pure function of what it is given, so a restarted or new leader takes the same step;
the caller writes the status before the actions it implies, so a crash in between repeats the
actions (unpausing twice, restoring the same template twice), never an earlier stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from autocrane import approllouts, untrusted, watchdogs
from controller import pods
from controller.approllouts import objects

A = approllouts


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """What one pass saw of one group."""

    deployments: tuple[objects.Deployment, ...]
    replica_sets: tuple[objects.ReplicaSet, ...]
    pods: tuple[pods.Pod, ...]
    """The namespace's pods (those of other workloads are ignored)."""
    unanswered: frozenset[str] = frozenset()
    """uids of pods with a probe that got no answer in this pass (no verdict: inconclusive)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Action:
    """A write to one Deployment: ``release`` (unpause), ``hold`` (pause) or ``restore`` (template + unpause)."""

    verb: str
    deployment: objects.Deployment
    template: Mapping[str, object] | None = None
    """For ``restore``: the last known good template to write back."""


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    deployment: objects.Deployment
    kind: str
    """Normal or Warning."""
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    status: A.Status
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    log: tuple[tuple[str, dict[str, object]], ...] = ()
    rollback: str | None = None
    """Why this step rolled a stage back, if it did: ``watchdog``, ``deadline`` or ``abort`` (a metric label)."""
    baked: tuple[int, float] | None = None
    """(stage, seconds from its release) when a stage passed in this step (a metric)."""


@dataclasses.dataclass(slots=True)
class _Work:
    """The step being built: the new status so far and what it implies."""

    status: A.Status
    actions: list[Action] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)
    log: list[tuple[str, dict[str, object]]] = dataclasses.field(default_factory=list)
    rollback: str | None = None
    baked: tuple[int, float] | None = None

    def set(self, **changes: Any) -> None:
        self.status = dataclasses.replace(self.status, **changes)

    def record(self, name: str, **changes: Any) -> None:
        records = dict(self.status.deployments)
        records[name] = dataclasses.replace(records.get(name, A.Record()), **changes)
        self.set(deployments=records)

    def done(self) -> Step:
        return Step(self.status, tuple(self.actions), tuple(self.events), tuple(self.log), self.rollback, self.baked)


def step(spec: A.Spec, status: A.Status, seen: Observed, now: float) -> Step:
    """The next status and actions for one group (see the module docstring)."""
    work = _Work(status)
    _adopt(work, seen.deployments)
    _tokens(work, spec, seen.deployments)
    while True:
        pending = _pending(work.status, seen.deployments)
        if not pending:
            return _settled(work, seen)
        stage = min(d.stage for d in pending)
        current = [d for d in pending if d.stage == stage]
        _hold_later(work, pending, stage)
        if not _is_released(work.status, current, stage):
            return _release(work, spec, current, stage, now)
        if not _judge(work, spec, current, seen, now):
            return work.done()


def _adopt(work: _Work, deployments: Sequence[objects.Deployment]) -> None:
    """Forget Deployments gone from the group; adopt the template of new ones once rolled out."""
    names = {d.name for d in deployments}
    work.set(deployments={n: r for n, r in work.status.deployments.items() if n in names})
    for d in deployments:
        record = work.status.deployments.get(d.name)
        if record is not None and record.stage != d.stage:
            work.record(d.name, stage=d.stage)
        if (record is None or record.last_known_good is None) and d.rolled_out and not d.paused:
            work.record(d.name, stage=d.stage, last_known_good=d.template_hash,
                        last_known_good_template=d.template)
            work.log.append(("deployment adopted", {"deployment": d.name, "template": d.template_hash}))


def _tokens(work: _Work, spec: A.Spec, deployments: Sequence[objects.Deployment]) -> None:
    """``retry`` forgets the rejection of the current templates; promote/abort are read when judging."""
    if spec.retry and spec.retry != work.status.observed_retry:
        for d in deployments:
            record = work.status.deployments.get(d.name)
            if record is not None and d.template_hash in record.rejected:
                work.record(d.name, rejected=tuple(h for h in record.rejected if h != d.template_hash))
                work.log.append(("rejected template retried by hand", {"deployment": d.name,
                                                                       "template": d.template_hash}))
        work.set(observed_retry=spec.retry)


def _pending(status: A.Status, deployments: Iterable[objects.Deployment]) -> list[objects.Deployment]:
    out = []
    for d in deployments:
        record = status.deployments.get(d.name)
        if record is not None and record.last_known_good is not None and d.template_hash != record.last_known_good \
                and d.template_hash not in record.rejected:
            out.append(d)
    return out


def _is_released(status: A.Status, current: Sequence[objects.Deployment], stage: int) -> bool:
    return status.stage == stage and all(status.deployments[d.name].released == d.template_hash for d in current)


def _hold_later(work: _Work, pending: Sequence[objects.Deployment], stage: int) -> None:
    """Pause held Deployments of later stages that are not paused (the webhook was bypassed or down)."""
    for d in pending:
        if d.stage > stage and not d.paused and work.status.deployments[d.name].released != d.template_hash:
            work.actions.append(Action("hold", d))


def _settled(work: _Work, seen: Observed) -> Step:
    """Nothing pending: Healthy, or still RolledBack while a rejected template is applied (held).

    A rejected template that still runs pods is restored again (the restore was refused, say its
    resourceVersion precondition lost a race with the Deployment controller; the controller crashed
    after writing the rollback's status, before the restore; or the template was re-applied while
    the rollback ran and the webhook was down); one that runs none (re-applied by GitOps once the
    rollback was done) is only kept paused. A restore here carries its ``RevisionRejected`` Event
    too: after a crash the rollback's own Event, written after the restore, was lost with it (the
    writer keeps one Event per Deployment, reason and template per window, so a retried restore in the
    same process adds none)."""
    deployments = seen.deployments
    rejected = [d for d in deployments if d.template_hash in work.status.deployments.get(d.name, A.Record()).rejected]
    for d in rejected:
        record = work.status.deployments[d.name]
        if record.last_known_good_template and (running := _revision_pods([d], seen, lambda x: x.template_hash)):
            work.actions.append(Action("restore", d, record.last_known_good_template))
            why = f" ({work.status.reason})" if work.status.reason else ""
            work.events.append(Event(d, "Warning", "RevisionRejected",
                                     f"template {d.template_hash} was rejected{why} but {len(running)} pod(s) "
                                     f"still run it: restoring the last known good {record.last_known_good}"))
            work.log.append(("rejected template restored again", {"deployment": d.name, "template": d.template_hash,
                                                                   "pods": len(running)}))
        elif not d.paused:
            work.actions.append(Action("hold", d))
    if rejected:
        names = ", ".join(d.name for d in rejected)
        work.set(phase=A.ROLLED_BACK, stage=None, released_at=None, rolled_out_at=None,
                 message=f"the templates of {names} were rejected and stay held on the last known good version; "
                         "change them to start a new release, or `autocrane rollout retry`")
    elif work.status.phase != A.ROLLED_BACK or work.status.stage is not None:
        work.set(phase=A.HEALTHY, stage=None, released_at=None, rolled_out_at=None, reason="",
                 message="every Deployment runs its last known good template")
    return work.done()


def _release(work: _Work, spec: A.Spec, current: Sequence[objects.Deployment], stage: int, now: float) -> Step:
    if spec.paused:
        work.set(phase=A.PAUSED, reason="Paused",
                 message=f"the group is paused (spec.paused); stage {stage} is held")
        return work.done()
    for d in current:
        work.record(d.name, released=d.template_hash)
        work.actions.append(Action("release", d))
        work.events.append(Event(d, "Normal", "StageReleased",
                                 f"stage {stage}: template {d.template_hash} ({', '.join(d.images)}) released"))
    work.set(phase=A.PROGRESSING, stage=stage, released_at=now, rolled_out_at=None, reason="Released",
             message=f"stage {stage}: released {', '.join(d.name for d in current)}")
    work.log.append(("stage released", {"stage": stage, "deployments": [d.name for d in current]}))
    return work.done()


def _judge(work: _Work, spec: A.Spec, current: Sequence[objects.Deployment], seen: Observed, now: float) -> bool:
    """Judge the released stage; True when it passed (the caller goes on to the next stage)."""
    stage, released_at = work.status.stage, work.status.released_at or now
    new_pods = _revision_pods(current, seen, lambda d: d.template_hash)
    failing = [p for p in new_pods if _in_error(p)]
    if spec.abort and spec.abort != work.status.observed_abort:
        work.set(observed_abort=spec.abort)
        _roll_back(work, current, seen.deployments, "abort", "Abort", "aborted by hand")
        return False
    if len(failing) > spec.max_error_pods:
        return _on_errors(work, current, seen, failing)
    if work.status.phase == A.STUCK:
        work.set(reason="", message="")  # the errors are gone: judge the stage anew
    for d in current:
        if d.paused:  # released in the status, but the unpause was lost (a crash, a 409): unpause again
            work.actions.append(Action("release", d))
    rolled = all(d.rolled_out for d in current)
    if not rolled:
        return _rolling(work, spec, current, seen.deployments, released_at, now)
    rolled_out_at = work.status.rolled_out_at or now
    if work.status.rolled_out_at is None:
        work.log.append(("stage rolled out", {"stage": stage, "seconds": round(now - released_at, 1)}))
    work.set(rolled_out_at=rolled_out_at)
    promote = bool(spec.promote) and spec.promote != work.status.observed_promote
    if promote:
        work.set(observed_promote=spec.promote)
        work.log.append(("stage promoted by hand", {"stage": stage}))
    elif now - rolled_out_at < spec.bake_seconds:
        # No time left in the message: it would change the status (a write) every pass; phase_of shows it.
        work.set(phase=A.BAKING, reason="Baking",
                 message=f"stage {stage}: baking {len(new_pods)} pod(s) until "
                         f"{untrusted.rfc3339(rolled_out_at + spec.bake_seconds)}")
        return False
    elif unsure := _inconclusive(new_pods, seen.unanswered):
        work.set(phase=A.BAKING, reason="Inconclusive",
                 message=f"stage {stage}: baked, waiting for watchdog reports from {', '.join(p.name for p in unsure)}")
        return False
    _pass(work, current, stage, now - released_at)
    return True


def _rolling(work: _Work, spec: A.Spec, current: Sequence[objects.Deployment],
             everyone: Sequence[objects.Deployment], released_at: float, now: float) -> bool:
    stage = work.status.stage
    late = now - released_at > spec.progress_deadline or any(d.deadline_exceeded for d in current)
    if late:
        _roll_back(work, current, everyone, "deadline", "Deadline",
                   f"not rolled out within {spec.progress_deadline:.0f}s of its release")
        return False
    done = sum(min(d.updated, d.available) for d in current)
    wanted = sum(d.replicas for d in current)
    work.set(phase=A.PROGRESSING, reason="RollingOut", message=f"stage {stage}: rolling out {done}/{wanted}")
    return False


def _baseline(work: _Work, current: Sequence[objects.Deployment], seen: Observed) -> list[pods.Pod]:
    """Pods running the last known good template: of the current stage, else (none left) of the whole group."""
    def lkg(d: objects.Deployment) -> str | None:
        record = work.status.deployments.get(d.name)
        return None if record is None else record.last_known_good

    same_stage = _revision_pods(current, seen, lkg)
    return same_stage or _revision_pods([d for d in seen.deployments if d not in current], seen, lkg)


def _on_errors(work: _Work, current: Sequence[objects.Deployment], seen: Observed,
               failing: Sequence[pods.Pod]) -> bool:
    old_failing = [p for p in _baseline(work, current, seen) if _in_error(p)]
    culprit = failing[0]
    name, message = _first_error(culprit)
    if old_failing:
        if work.status.phase != A.STUCK:
            for d in current:
                work.events.append(Event(d, "Warning", "BaselineFailing", (
                    f"held, not rolled back: pods of the last known good template fail too ({old_failing[0].name}); "
                    f"the environment is to blame, not the release")))
        work.set(phase=A.STUCK, reason="BaselineFailing", message=(
            f"stage {work.status.stage}: {len(failing)} new and {len(old_failing)} old pod(s) in error "
            f"(e.g. {culprit.name}: watchdog {name!r}: {message}); held without rollback"))
        return False
    _roll_back(work, current, seen.deployments, "watchdog", "Watchdog",
               f"watchdog {name!r} of pod {culprit.name} is in error ({message})"
               + (f", and {len(failing) - 1} more pod(s)" if len(failing) > 1 else ""))
    return False


def _roll_back(work: _Work, current: Sequence[objects.Deployment], everyone: Sequence[objects.Deployment],
               metric: str, reason: str, why: str) -> None:
    """Restore the stage's last known good templates; reject its templates and those of the same
    release held in later stages."""
    stage = work.status.stage
    identities = {d.release_identity for d in current}
    for d in current:
        record = work.status.deployments[d.name]
        work.record(d.name, released=None, rejected=(*record.rejected, d.template_hash)[-A.MAX_REJECTED:])
        work.actions.append(Action("restore", d, record.last_known_good_template or {}))
        work.events.append(Event(d, "Warning", "RevisionRejected",
                                 f"stage {stage}: template {d.template_hash} rolled back to "
                                 f"{record.last_known_good}: {why}"))
    for d in everyone:
        found = work.status.deployments.get(d.name)
        if found is None or d in current or d.release_identity not in identities:
            continue
        record = found
        if d.template_hash not in (record.last_known_good, *record.rejected) and d.stage > (stage or 0):
            work.record(d.name, released=None, rejected=(*record.rejected, d.template_hash)[-A.MAX_REJECTED:])
            work.events.append(Event(d, "Warning", "RevisionRejected",
                                     f"template {d.template_hash} rejected with stage {stage}: {why}"))
    work.set(phase=A.ROLLED_BACK, stage=None, released_at=None, rolled_out_at=None, reason=reason,
             message=f"stage {stage} rolled back: {why}")
    work.log.append(("stage rolled back", {"stage": stage, "reason": metric, "why": why}))
    work.rollback = metric


def _pass(work: _Work, current: Sequence[objects.Deployment], stage: int | None, seconds: float) -> None:
    for d in current:
        work.record(d.name, last_known_good=d.template_hash, last_known_good_template=d.template, released=None)
        work.events.append(Event(d, "Normal", "StageBaked",
                                 f"stage {stage}: template {d.template_hash} baked; it is the last known good"))
    work.set(stage=None, released_at=None, rolled_out_at=None, reason="", message="")
    work.log.append(("stage baked", {"stage": stage, "seconds": round(seconds, 1)}))
    work.baked = (stage or 0, seconds)


def _revision_pods(deployments: Sequence[objects.Deployment], seen: Observed,
                   template: Callable[[objects.Deployment], str | None]) -> list[pods.Pod]:
    """The live pods of ``deployments`` whose ReplicaSet runs the template ``template(deployment)`` names."""
    wanted = set()
    for d in deployments:
        for rs in seen.replica_sets:
            if rs.owner_uid == d.uid and rs.template_hash == template(d):
                wanted.add(rs.name)
    return [p for p in seen.pods if not p.terminating and p.owner is not None and p.owner.kind == "ReplicaSet"
            and p.owner.name in wanted]


def _in_error(pod: pods.Pod) -> bool:
    label, _ = watchdogs.health(pod.annotations)
    return label == "error"


def _first_error(pod: pods.Pod) -> tuple[str, str]:
    found, problems = watchdogs.statuses(pod.annotations)
    for name, status in sorted(found.items()):
        if status.level == watchdogs.Level.ERROR:
            return name, status.message
    name = next(iter(sorted(problems)), "?")
    return name, problems.get(name, "unreadable status")


def _inconclusive(new_pods: Sequence[pods.Pod], unanswered: frozenset[str]) -> list[pods.Pod]:
    """Pods that declare probes but have no report for one of them, or got no answer this pass."""
    out = []
    for pod in new_pods:
        probes = pod.probes()
        if pod.uid in unanswered or any(watchdogs.STATUS_PREFIX + name not in pod.annotations for name in probes):
            out.append(pod)
    return out


def phase_of(status: A.Status, deployment: objects.Deployment, spec: A.Spec, now: float) -> str:
    """What ``autocrane status`` shows for one Deployment: Held, RollingOut n/m, Baking (time left),
    RolledBack (reason), Rejected, Stuck or Done."""
    record = status.deployments.get(deployment.name)
    if record is None or record.last_known_good is None:
        return "Adopting"
    if deployment.template_hash in record.rejected:
        return "Rejected"
    if deployment.template_hash == record.last_known_good:
        return f"RolledBack ({status.reason.lower()})" if status.phase == A.ROLLED_BACK and status.reason else "Done"
    if record.released != deployment.template_hash or status.stage != deployment.stage:
        return "Held"
    if status.phase == A.STUCK:
        return "Stuck"
    if not deployment.rolled_out or status.rolled_out_at is None:
        return f"RollingOut {min(deployment.updated, deployment.available)}/{deployment.replicas}"
    left = max(0.0, spec.bake_seconds - (now - status.rolled_out_at))
    return f"Baking ({left:.0f}s left)"
