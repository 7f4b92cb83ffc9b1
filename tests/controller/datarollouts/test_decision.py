"""The rollout step (pure): stages, gates, rollback, last known good, manual controls, resuming.

Includes the acceptance cases of the original UpgradeOracle (research/autocrane.md section 6) that
still apply, adapted where the rewrite decides differently on purpose (noted per test).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from autocrane import inpod, manifests
from autocrane.inpod import Ack
from controller import pods
from controller.datarollouts import decision as datarollout
from controller.datarollouts import participants
from controller.datarollouts.decision import Spec, State
from tests.controller.podfactory import NOW, T0, raw, stamp

SRC = "models"
SPEC = Spec(SRC)
POLICY = datarollout.Policy(bake_seconds=60, progress_deadline=300)


def sha(ch: str) -> str:
    return ch * 64


def manifest(*versions: str, lkg: str | None = "a") -> manifests.SourceManifest:
    return manifests.SourceManifest(SRC, tuple(
        manifests.Version(v, sha(str(i)), 10, NOW - dt.timedelta(days=10 - i)) for i, v in enumerate(versions)), lkg)


def request(version: str, index: int) -> str:
    return manifests.DataRequest(version, sha(str(index))).to_annotation()


A, B, C = (request(v, i) for i, v in enumerate("abc"))


def member(name: str, on: str | None = None, *, error_since: float | None = None, uses: str = SRC,
           **kwargs: Any) -> pods.Pod:
    notes: dict[str, str] = {"data.autocrane.io/model": uses, **kwargs.pop("annotations", {})}
    if on is not None:
        notes["request.data.autocrane.io/model"] = on
    if error_since is not None:
        notes["status.autocrane.io/app"] = f"error/{stamp(T0 - error_since)}/probe: http 500"
    return pods.from_json(raw(name, annotations=notes, ip=f"127.16.0.{len(name)}", **kwargs))


def dependent(name: str, *, error_since: float | None = None) -> pods.Pod:
    notes = {"store.autocrane.io/deps": "other, models"}
    if error_since is not None:
        notes["status.autocrane.io/x"] = f"error/{stamp(T0 - error_since)}/ohno"
    return pods.from_json(raw(name, annotations=notes))


def acks(pod_list: list[pods.Pod], version: str, at: float) -> dict[str, dict[str, Ack]]:
    return {p.uid: {"model": Ack(version, at)} for p in pod_list}


def wanted(step: datarollout.Step) -> dict[str, str]:
    return {r.pod.name: r.request.version for r in step.requests}


def running(state: State, stage: int = 0, started: float = T0 - 1000, stage_started: float | None = None,
            target: str = "b") -> State:
    return dataclasses.replace(state, last_known_good="a", progress=datarollout.Progressing(
        target, stage, started, stage_started or started))


# --- the original's acceptance cases -------------------------------------------------------------

def test_a_new_pod_gets_the_last_known_good_and_a_pod_not_using_the_source_nothing() -> None:
    # UpgradeOracle 1: a pod without a request gets LKG; a source the pod does not use gives nothing.
    # (Here latest b also starts a rollout; with one pod its single pod is stage 1, see below.)
    new_pod = dataclasses.replace(member("web-new"), phase="Pending", pod_ip="")
    step = datarollout.step(SPEC, State(), manifest("a", "b"), [new_pod, member("other", uses="fonts")], {}, T0, POLICY)
    assert wanted(step) == {"web-new": "a"}
    assert step.state.target == "b"


def test_nothing_to_do_when_the_last_known_good_is_the_latest() -> None:
    # UpgradeOracle 2.
    step = datarollout.step(SPEC, State(), manifest("a"), [member("web-1", A)], {}, T0, POLICY)
    assert step.requests == () and step.state.target is None and step.repository_lkg is None


def test_a_stage_is_not_passed_before_its_bake_time() -> None:
    # UpgradeOracle 3 (probation), measured from the datadeployer's deployedAt, not the request.
    pod = member("web-1", B)
    state = running(State(), started=T0 - 100)
    step = datarollout.step(SPEC, state, manifest("a", "b"), [pod], {}, T0, POLICY)
    assert step.state.stage == 0 and "1 pod(s) to acknowledge b" in step.state.message
    step = datarollout.step(SPEC, state, manifest("a", "b"), [pod], acks([pod], "b", T0 - 30), T0, POLICY)
    assert step.state.stage == 0 and "baking until 2026-03-01T12:00:30Z" in step.state.message
    step = datarollout.step(SPEC, state, manifest("a", "b"), [pod], acks([pod], "b", T0 - 60), T0, POLICY)
    assert step.state.stage == 1


def test_a_single_pod_is_its_own_first_stage() -> None:
    # UpgradeOracle 4: one pod on LKG -> latest.
    step = datarollout.step(SPEC, State(), manifest("a", "b"), [member("web-1", A)], {}, T0, POLICY)
    assert wanted(step) == {"web-1": "b"} and step.state.stage == 0


def test_an_unreadable_request_is_reset_to_the_last_known_good() -> None:
    # UpgradeOracle 5.
    step = datarollout.step(SPEC, State(), manifest("a"), [member("web-1", "unparsable")], {}, T0, POLICY)
    assert wanted(step) == {"web-1": "a"}


def test_a_pod_on_a_middle_version_joins_the_rollout() -> None:
    # UpgradeOracle 7: pod on c, LKG a, latest b -> latest (it is chosen for stage 1).
    step = datarollout.step(SPEC, State(), manifest("a", "c", "b"), [member("web-1", request("c", 1))], {}, T0, POLICY)
    assert wanted(step) == {"web-1": "b"}


def test_no_last_known_good_or_no_versions_means_no_requests() -> None:
    # UpgradeOracle 8 and 9.
    assert datarollout.step(SPEC, State(), manifest("a", "b", lkg=None), [member("w")], {}, T0, POLICY).requests == ()
    assert datarollout.step(SPEC, State(), manifest(lkg=None), [member("w")], {}, T0, POLICY).requests == ()
    step = datarollout.step(SPEC, State(), None, [member("w")], {}, T0, POLICY)
    assert step.requests == () and "not in the data repository" in step.state.message


def test_a_failing_dependent_holds_the_rollout_without_moving_anyone() -> None:
    # UpgradeOracle 10: pods 1-3 on a, a dependent already in error -> nobody moves.
    members = [member(f"web-{i}", A) for i in (1, 2, 3)]
    step = datarollout.step(SPEC, State(), manifest("a", "b"), [*members, dependent("front", error_since=T0 - 900)],
                        {}, T0, POLICY)
    assert step.requests == ()
    assert step.state.target == "b" and "held while watchdog 'x' of pod front" in step.state.message


def test_the_first_stage_puts_one_of_three_pods_on_the_latest() -> None:
    # UpgradeOracle 11 (the original held the first 2 in list order; here the first by name moves).
    members = [member(f"web-{i}", A) for i in (1, 2, 3)]
    step = datarollout.step(SPEC, State(), manifest("a", "b"), members, {}, T0, POLICY)
    assert wanted(step) == {"web-1": "b"}
    assert step.state.phase == datarollout.PROGRESSING and step.state.on_target == 1


def test_the_last_stage_moves_the_rest_once_the_stage_before_baked() -> None:
    # UpgradeOracle 12: pod3 on b long enough -> pods 1 and 2 follow.
    members = [member("web-1", A), member("web-2", A), member("web-3", B)]
    state = running(State(), stage=1)
    step = datarollout.step(SPEC, state, manifest("a", "b"), members, acks(members[2:], "b", T0 - 900), T0, POLICY)
    assert wanted(step) == {"web-1": "b", "web-2": "b"}
    assert step.state.stage == 2 and step.state.stage_started == T0


# --- stages ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("stages", "members", "counts"), [
    (("1", "25%", "100%"), 8, [1, 2, 8]),
    (("1", "25%", "100%"), 3, [1, 1, 3]),
    (("1", "25%", "100%"), 1, [1, 1, 1]),
    (("5", "10%", "100%"), 3, [3, 3, 3]),
    (("50%", "100%"), 0, [0, 0]),
])
def test_stage_counts(stages: tuple[str, ...], members: int, counts: list[int]) -> None:
    assert datarollout.stage_counts(stages, members) == counts


@pytest.mark.parametrize("stages", [(), ("0", "100%"), ("1", "50%"), ("101%",), ("x", "100%")])
def test_bad_stages_are_refused(stages: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        datarollout.check_stages(stages)


def test_a_three_stage_rollout_from_start_to_last_known_good() -> None:
    names = [f"web-{i}" for i in range(1, 9)]
    versions: dict[str, str] = dict.fromkeys(names, A)
    deployed: dict[str, float] = {}
    state, now, stages_seen = State(), T0, []
    spec = Spec(SRC, stages=("1", "25%", "100%"))
    for _ in range(40):
        members = [member(n, versions[n]) for n in names]
        the_acks = {p.uid: {"model": Ack(manifests.parse_request(versions[p.name]).version, deployed.get(p.name))}
                    for p in members}
        step = datarollout.step(spec, state, manifest("a", "b"), members, the_acks, now, POLICY)
        for r in step.requests:
            versions[r.pod.name] = r.request.to_annotation()
            deployed[r.pod.name] = now + 5
        stages_seen += [f["stage"] for m, f in step.log if m == "data rollout stage started"]
        state, now = step.state, now + 10
        if state.phase == datarollout.SUCCEEDED:
            break
    assert stages_seen == [0, 1, 2]
    assert state.last_known_good == "b" and state.target is None
    assert set(versions.values()) == {B}
    assert step.repository_lkg == "b"
    assert "rolled out to every pod" in state.message


# --- rollback -------------------------------------------------------------------------------------

def test_an_error_on_a_stage_pod_rolls_back_holds_the_version_and_names_pod_and_watchdog() -> None:
    members = [member("web-1", B, error_since=T0 - 5), member("web-2", A), member("web-3", A)]
    step = datarollout.step(SPEC, running(State(), started=T0 - 100), manifest("a", "b"), members, {}, T0, POLICY)
    assert step.state.phase == datarollout.ROLLED_BACK and step.state.target is None and step.state.held == ("b",)
    assert wanted(step) == {"web-1": "a"}
    (event,) = step.events
    assert (event.pod.name, event.kind, event.reason) == ("web-1", "Warning", "DataRolledBack")
    assert "watchdog 'app' of pod web-1" in event.message and "http 500" in event.message
    assert step.repository_lkg is None
    assert step.rollback == "watchdog"

    # held: the same latest never starts again ...
    back = [member("web-1", A), member("web-2", A), member("web-3", A)]
    again = datarollout.step(SPEC, step.state, manifest("a", "b"), back, {}, T0 + 600, POLICY)
    assert again.requests == () and again.state.phase == datarollout.ROLLED_BACK
    # ... until a newer one appears
    newer = datarollout.step(SPEC, step.state, manifest("a", "b", "c"), back, {}, T0 + 700, POLICY)
    assert newer.state.target == "c" and wanted(newer) == {"web-1": "c"} and newer.state.held == ("b",)


def test_an_error_on_a_dependent_during_the_rollout_rolls_back() -> None:
    members = [member("web-1", B), member("web-2", A)]
    step = datarollout.step(SPEC, running(State(), started=T0 - 100), manifest("a", "b"),
                        [*members, dependent("front", error_since=T0 - 20)], {}, T0, POLICY)
    assert step.state.phase == datarollout.ROLLED_BACK and step.events[0].pod.name == "front"


def test_no_acknowledgement_within_the_deadline_rolls_back() -> None:
    pod = member("web-1", B)
    the_acks = {pod.uid: {"model": Ack("a", T0 - 9000, error="sha256 mismatch")}}
    ok = datarollout.step(SPEC, running(State(), started=T0 - 299), manifest("a", "b"), [pod], the_acks, T0, POLICY)
    assert ok.state.phase == datarollout.PROGRESSING and ok.rollback is None
    late = datarollout.step(SPEC, running(State(), started=T0 - 301), manifest("a", "b"), [pod], the_acks, T0, POLICY)
    assert late.state.phase == datarollout.ROLLED_BACK and late.events[0].reason == "DataRolloutDeadline"
    assert late.rollback == "deadline"
    assert "sha256 mismatch" in late.events[0].message


def test_new_pods_during_a_rollout_get_the_last_known_good() -> None:
    members = [member("web-1", B), member("web-2", A), dataclasses.replace(member("web-9"), phase="Pending")]
    state = running(State(), stage=1, stage_started=T0 - 5)
    step = datarollout.step(SPEC, state, manifest("a", "b"), members, acks(members[:1], "b", T0 - 30), T0, POLICY)
    assert wanted(step) == {"web-9": "a"}


# --- resuming, manual controls ------------------------------------------------------------------

def test_a_new_leader_resumes_the_same_stage_with_the_same_pods() -> None:
    members = [member(f"web-{i}", A) for i in range(1, 9)]
    first = datarollout.step(SPEC, running(State(), stage=1, started=T0 - 900, stage_started=T0 - 10),
                         manifest("a", "b"), [member("web-1", B), *members[1:]], {}, T0, POLICY)
    # the old leader crashed after writing the status, before the pod requests
    resumed = datarollout.step(SPEC, first.state, manifest("a", "b"), [member("web-1", B), *members[1:]], {}, T0 + 1,
                           POLICY)
    assert wanted(resumed) == wanted(first) == {"web-2": "b"}
    assert resumed.state.stage == first.state.stage == 1
    assert resumed.state.stage_started == T0 - 10


def test_promote_passes_the_current_gate_once() -> None:
    members = [member("web-1", B), member("web-2", A), member("web-3", A), member("web-4", A)]
    state = running(State(), stage=0, stage_started=T0 - 5)
    spec = Spec(SRC, stages=("1", "50%", "100%"), promote="t1")
    step = datarollout.step(spec, state, manifest("a", "b"), members, {}, T0, POLICY)
    assert step.state.stage == 1 and step.state.observed_promote == "t1" and wanted(step) == {"web-2": "b"}
    again = datarollout.step(spec, step.state, manifest("a", "b"), members, {}, T0 + 1, POLICY)
    assert again.state.stage == 1


def test_promote_retries_a_held_version() -> None:
    state = dataclasses.replace(State(), progress=datarollout.Idle(datarollout.ROLLED_BACK), last_known_good="a",
                                held=("b",))
    step = datarollout.step(Spec(SRC, promote="t2"), state, manifest("a", "b"), [member("web-1", A)], {}, T0, POLICY)
    assert step.state.target == "b" and step.state.held == () and wanted(step) == {"web-1": "b"}


def test_abort_rolls_back_and_holds() -> None:
    members = [member("web-1", B), member("web-2", A)]
    step = datarollout.step(Spec(SRC, abort="x"), running(State()), manifest("a", "b"), members, {}, T0, POLICY)
    assert step.state.phase == datarollout.ROLLED_BACK and step.state.held == ("b",) and wanted(step) == {"web-1": "a"}
    assert "aborted by hand" in step.state.message and step.state.observed_abort == "x"
    assert step.rollback == "abort"
    later = datarollout.step(Spec(SRC, abort="x"), step.state, manifest("a", "b", "c"), [member("web-1", A)], {}, T0,
                         POLICY)
    assert later.state.target == "c"  # the old token does not abort the next rollout


def test_a_pin_puts_every_pod_on_that_version_and_stops_rolling_out() -> None:
    members = [member("web-1", B), member("web-2", A)]
    step = datarollout.step(Spec(SRC, pin_version="c"), running(State()), manifest("a", "c", "b"), members, {}, T0,
                        POLICY)
    assert step.state.phase == datarollout.PINNED and step.state.target is None
    assert wanted(step) == {"web-1": "c", "web-2": "c"} and step.repository_lkg is None
    unpinned = datarollout.step(SPEC, step.state, manifest("a", "c", "b"), members, {}, T0, POLICY)
    assert unpinned.state.phase == datarollout.PROGRESSING and unpinned.state.target == "b"
    missing = datarollout.step(Spec(SRC, pin_version="zz"), State(), manifest("a"), members, {}, T0, POLICY)
    assert "not in the repository" in missing.state.message and missing.state.phase == datarollout.IDLE


def test_the_repository_is_told_the_last_known_good_until_it_agrees() -> None:
    state = dataclasses.replace(State(), last_known_good="b", progress=datarollout.Idle(datarollout.SUCCEEDED))
    assert datarollout.step(SPEC, state, manifest("a", "b", lkg="a"), [], {}, T0, POLICY).repository_lkg == "b"
    assert datarollout.step(SPEC, state, manifest("a", "b", lkg="b"), [], {}, T0, POLICY).repository_lkg is None


def test_acknowledgements_are_read_from_the_datadeployer_status_and_mirrored_once() -> None:
    body = {"sets": {"model": {"version": "b", "deployedAt": "2026-03-01T11:59:00Z", "error": None},
                     "junk": "x", "other": {"version": 3}}, "annotationsError": None}
    found = inpod.parse_acks(body, now=T0)
    assert found["model"] == Ack("b", T0 - 60) and found["other"] == Ack(None)
    assert inpod.parse_acks("garbage", now=T0) == {} and inpod.parse_acks({"sets": []}, now=T0) == {}
    pod = member("web-1", B)
    changes = participants.ack_annotations(pod, found)
    assert changes == {"status.data.autocrane.io/model": '{"version":"b","deployedAt":"2026-03-01T11:59:00Z"}'}
    mirrored = pod.with_annotations(changes, pod.health_label)
    assert participants.ack_annotations(mirrored, found) == {}
