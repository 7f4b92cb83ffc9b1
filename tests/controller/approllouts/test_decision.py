"""The app-rollout decision: stages released one by one, baked, rolled back, held (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from autocrane import approllouts as A
from controller.approllouts import loop
from tests.controller.approlloutkit import FAIL, T0, World, deployment, pod, replica_set, template, verbs


def _adopted(*names_and_stages: tuple[str, int], image: str = "web:1", replicas: int = 2) -> World:
    world = World()
    for name, stage in names_and_stages:
        d = deployment(name, image, stage=stage, replicas=replicas)
        world.put(d)
        rs = replica_set(d, image)
        world.replica_sets.append(rs)
        world.pods += [pod(rs, i) for i in range(replicas)]
    world.step(T0)
    return world


def _apply(world: World, name: str, image: str, **kwargs: object) -> None:
    """A user's apply of a new template; the webhook holds it (paused)."""
    old = next(d for d in world.deployments if d.name == name)
    world.put(deployment(name, image, stage=old.stage, paused=True, updated=0, available=old.replicas,
                         status_replicas=old.replicas, generation=old.generation + 1, **kwargs))  # type: ignore[arg-type]


def _roll_out(world: World, name: str, image: str, *, status: str | None = "info/2027-01-15T08:00:00Z/probe: ok",
              replicas: int = 2) -> None:
    """The Deployment controller rolls the released template out completely."""
    old = next(d for d in world.deployments if d.name == name)
    d = deployment(name, image, stage=old.stage, generation=old.generation, replicas=replicas, release=old.release)
    world.put(d)
    rs = replica_set(d, image)
    world.replica_sets = [r for r in world.replica_sets if r.owner_uid != d.uid or r.template_hash == rs.template_hash]
    if rs not in world.replica_sets:
        world.replica_sets.append(rs)
    owned = {r.name for r in world.replica_sets if r.owner_uid == d.uid}
    world.pods = [p for p in world.pods if p.owner is None or p.owner.name not in owned]
    world.pods += [pod(rs, i, status) for i in range(replicas)]


def test_a_rolled_out_deployment_is_adopted_with_a_copy_of_its_template() -> None:
    world = _adopted(("web", 0))
    record = world.status.deployments["web"]
    assert record.last_known_good == A.template_hash(template("web:1"))
    assert record.last_known_good_template == template("web:1")
    assert world.status.phase == A.HEALTHY


def test_a_deployment_still_rolling_out_is_not_adopted_yet() -> None:
    world = World(deployments=[deployment("web", "web:1", updated=1)])
    result = world.step(T0)
    assert world.status.deployments.get("web") is None or world.status.deployments["web"].last_known_good is None
    assert result.actions == ()


def test_three_stages_roll_forward_one_by_one_each_after_the_previous_baked() -> None:
    world = _adopted(("canary", 0), ("zone-a", 1), ("zone-b", 2))
    for name in ("canary", "zone-a", "zone-b"):
        _apply(world, name, "web:2")
    first = world.step(T0 + 10)
    assert verbs(first) == [("release", "canary")]
    assert world.status.stage == 0 and world.status.phase == A.PROGRESSING
    _roll_out(world, "canary", "web:2")
    assert world.step(T0 + 20).actions == ()
    assert world.status.phase == A.BAKING and world.status.rolled_out_at == T0 + 20
    assert world.step(T0 + 20 + 299).actions == ()  # the bake is 300 s by default
    second = world.step(T0 + 20 + 300)
    assert verbs(second) == [("release", "zone-a")]
    assert second.baked == (0, 310.0)
    assert world.status.deployments["canary"].last_known_good == A.template_hash(template("web:2"))
    _roll_out(world, "zone-a", "web:2")
    world.step(T0 + 400)
    assert verbs(world.step(T0 + 700)) == [("release", "zone-b")]
    _roll_out(world, "zone-b", "web:2")
    world.step(T0 + 800)
    world.step(T0 + 1100)
    assert world.status.phase == A.HEALTHY
    assert {r.last_known_good for r in world.status.deployments.values()} == {A.template_hash(template("web:2"))}


def test_a_failing_watchdog_in_stage_0_rolls_it_back_and_stage_1_never_starts() -> None:
    world = _adopted(("canary", 0), ("zone-a", 1))
    _apply(world, "canary", "web:2")
    _apply(world, "zone-a", "web:2")
    world.step(T0 + 10)
    _roll_out(world, "canary", "web:2", status=FAIL)
    result = world.step(T0 + 20)
    assert [(a.verb, a.deployment.name, a.template) for a in result.actions] == [
        ("restore", "canary", template("web:1"))]
    assert result.rollback == "watchdog"
    assert world.status.phase == A.ROLLED_BACK and world.status.reason == "Watchdog"
    assert "watchdog 'app' of pod canary-" in world.status.message and "http 500: down" in world.status.message
    v2 = A.template_hash(template("web:2"))
    assert v2 in world.status.deployments["canary"].rejected
    assert v2 in world.status.deployments["zone-a"].rejected  # same release (same images): rejected with it
    assert {e.reason for e in result.events} == {"RevisionRejected"}
    # zone-a is never released: it stays held with the rejected template.
    _roll_out(world, "canary", "web:1")
    for later in (T0 + 30, T0 + 1000):
        assert ("release", "zone-a") not in verbs(world.step(later))
    assert world.status.phase == A.ROLLED_BACK


def test_a_lone_deployment_rolls_itself_back() -> None:
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    assert verbs(world.step(T0 + 1)) == [("release", "web")]
    _roll_out(world, "web", "web:2", status=FAIL)
    assert verbs(world.step(T0 + 2)) == [("restore", "web")]


def test_the_rejected_template_reapplied_is_held_paused_and_not_released() -> None:
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    world.step(T0 + 1)
    _roll_out(world, "web", "web:2", status=FAIL)
    world.step(T0 + 2)
    _roll_out(world, "web", "web:1")  # the rollback's template is live
    world.step(T0 + 3)
    # GitOps re-applies the rejected template; had the webhook been bypassed, it would not be paused.
    world.put(deployment("web", "web:2", paused=False, updated=0, generation=5, observed=5))
    result = world.step(T0 + 4)
    assert verbs(result) == [("hold", "web")]
    assert world.status.phase == A.ROLLED_BACK and "rejected" in world.status.message
    world.put(deployment("web", "web:2", paused=True, updated=0, generation=6, observed=6))
    assert world.step(T0 + 5).actions == ()
    # Changing the template again starts a new release.
    _apply(world, "web", "web:3")
    assert verbs(world.step(T0 + 6)) == [("release", "web")]


def test_v3_arriving_while_v2_bakes_keeps_v1_as_the_rollback_target() -> None:
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    world.step(T0 + 1)
    _roll_out(world, "web", "web:2")
    world.step(T0 + 2)
    assert world.status.phase == A.BAKING
    _apply(world, "web", "web:3")
    assert verbs(world.step(T0 + 3)) == [("release", "web")]
    assert world.status.deployments["web"].last_known_good == A.template_hash(template("web:1"))
    _roll_out(world, "web", "web:3", status=FAIL)
    result = world.step(T0 + 4)
    assert [(a.verb, a.template) for a in result.actions] == [("restore", template("web:1"))]


def test_old_revision_pods_failing_too_hold_the_stage_without_rollback() -> None:
    world = _adopted(("web", 0), replicas=3)
    _apply(world, "web", "web:2")
    world.step(T0 + 1)
    d = deployment("web", "web:2", replicas=3, updated=1, available=3, status_replicas=4)
    world.put(d)
    new = replica_set(d, "web:2")
    world.replica_sets.append(new)
    world.pods.append(pod(new, 9, FAIL))
    world.pods = [pod(world.replica_sets[0], i, FAIL) if p.owner and p.owner.name == world.replica_sets[0].name
                  else p for i, p in enumerate(world.pods)]
    result = world.step(T0 + 2)
    assert result.actions == () and result.rollback is None
    assert world.status.phase == A.STUCK and world.status.reason == "BaselineFailing"
    assert [e.reason for e in result.events] == ["BaselineFailing"]
    assert world.step(T0 + 3).events == ()  # reported once


def test_new_pods_that_never_become_available_are_rolled_back_at_the_deadline() -> None:
    world = _adopted(("web", 0))
    world.spec = A.Spec(progress_deadline=120)
    _apply(world, "web", "web:2")
    world.step(T0)
    world.put(deployment("web", "web:2", updated=1, available=1))
    assert world.step(T0 + 119).actions == ()
    assert world.status.message == "stage 0: rolling out 1/2"
    result = world.step(T0 + 121)
    assert verbs(result) == [("restore", "web")]
    assert result.rollback == "deadline"


def test_a_missing_or_unanswered_watchdog_report_is_inconclusive() -> None:
    world = _adopted(("web", 0))
    world.spec = A.Spec(bake_seconds=60)
    _apply(world, "web", "web:2")
    world.step(T0)
    _roll_out(world, "web", "web:2", status=None)  # probes declared, no status yet
    world.step(T0 + 1)
    result = world.step(T0 + 100)
    assert result.actions == () and result.rollback is None
    assert world.status.phase == A.BAKING and world.status.reason == "Inconclusive"
    _roll_out(world, "web", "web:2")
    world.unanswered = frozenset({world.pods[-1].uid})
    assert world.step(T0 + 101).baked is None
    world.unanswered = frozenset()
    assert world.step(T0 + 102).baked is not None


def test_pods_added_later_by_hpa_are_checked_but_do_not_restart_the_bake() -> None:
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    world.step(T0)
    _roll_out(world, "web", "web:2")
    world.step(T0 + 10)
    world.put(deployment("web", "web:2", replicas=4, updated=4, available=3))  # HPA scaled up
    world.step(T0 + 100)
    assert world.status.rolled_out_at == T0 + 10
    _roll_out(world, "web", "web:2", replicas=4)
    assert world.step(T0 + 310).baked == (0, 310.0)


def test_a_tolerance_lets_one_failing_pod_pass() -> None:
    world = _adopted(("web", 0))
    world.spec = A.Spec(max_error_pods=1)
    _apply(world, "web", "web:2")
    world.step(T0)
    _roll_out(world, "web", "web:2")
    world.pods[-1] = pod(world.replica_sets[-1], 1, FAIL)
    assert world.step(T0 + 10).rollback is None
    assert world.status.phase == A.BAKING


def test_promote_skips_the_bake_abort_rolls_back_and_retry_forgets_the_rejection() -> None:
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    world.step(T0)
    _roll_out(world, "web", "web:2")
    world.spec = A.Spec(promote="p1")
    assert world.step(T0 + 5).baked == (0, 5.0)
    assert world.status.observed_promote == "p1"
    _apply(world, "web", "web:3")
    world.step(T0 + 6)
    world.spec = A.Spec(promote="p1", abort="a1")
    result = world.step(T0 + 7)
    assert verbs(result) == [("restore", "web")] and result.rollback == "abort"
    assert world.step(T0 + 8).rollback is None  # a token acts once
    _apply(world, "web", "web:3")
    assert world.step(T0 + 9).actions == ()  # rejected: held
    world.spec = A.Spec(promote="p1", abort="a1", retry="r1")
    assert verbs(world.step(T0 + 10)) == [("release", "web")]


def test_a_paused_group_releases_no_stage_but_still_rolls_back() -> None:
    world = _adopted(("canary", 0), ("zone-a", 1))
    _apply(world, "canary", "web:2")
    world.step(T0)
    world.spec = A.Spec(paused=True)
    _roll_out(world, "canary", "web:2")
    _apply(world, "zone-a", "web:2")
    world.step(T0 + 1)
    assert ("release", "zone-a") not in verbs(world.step(T0 + 400))
    assert world.status.phase == A.PAUSED
    world.spec = A.Spec()
    assert verbs(world.step(T0 + 401)) == [("release", "zone-a")]
    world.spec = A.Spec(paused=True)
    _roll_out(world, "zone-a", "web:2", status=FAIL)
    assert verbs(world.step(T0 + 402)) == [("restore", "zone-a")]


def test_a_held_later_stage_that_is_not_paused_is_paused() -> None:
    world = _adopted(("canary", 0), ("zone-a", 1))
    _apply(world, "canary", "web:2")
    world.put(deployment("zone-a", "web:2", stage=1, paused=False, updated=0))
    assert sorted(verbs(world.step(T0))) == [("hold", "zone-a"), ("release", "canary")]


def test_a_release_id_ties_stages_whose_templates_differ_in_more_than_the_image() -> None:
    world = _adopted(("canary", 0), ("zone-a", 1), ("zone-b", 1))
    _apply(world, "canary", "web:2", release="r2")
    old = template("web:1")
    zoned = {**old, "spec": {**old["spec"], "nodeSelector": {"zone": "a"}}}
    world.put(deployment("zone-a", "web:1", stage=1, paused=True, updated=0, release="r2", tmpl=zoned))
    world.put(deployment("zone-b", "web:3", stage=1, paused=True, updated=0))  # another release
    world.step(T0)
    _roll_out(world, "canary", "web:2", status=FAIL)
    world.step(T0 + 1)
    assert A.template_hash(zoned) in world.status.deployments["zone-a"].rejected
    assert world.status.deployments["zone-b"].rejected == ()


def test_a_deployment_that_leaves_the_group_is_forgotten() -> None:
    world = _adopted(("canary", 0), ("zone-a", 1))
    world.deployments = [d for d in world.deployments if d.name != "zone-a"]
    world.step(T0)
    assert set(world.status.deployments) == {"canary"}


def test_the_same_inputs_give_the_same_step_so_a_new_leader_resumes_where_the_old_one_was() -> None:
    world = _adopted(("canary", 0), ("zone-a", 1))
    _apply(world, "canary", "web:2")
    world.step(T0)
    _roll_out(world, "canary", "web:2")
    world.step(T0 + 10)
    again = dataclasses.replace(world)
    assert world.step(T0 + 100) == again.step(T0 + 100)
    assert world.status.phase == A.BAKING and world.status.rolled_out_at == T0 + 10


@pytest.mark.parametrize("status", [{"stage": 0}, {"stage": "x", "releasedAt": "2027-01-01T00:00:00Z"},
                                    {"deployments": {"web": {"lastKnownGood": {"hash": "zz"}}}}, {"phase": "Nope"}])
def test_a_torn_or_hand_edited_status_reads_as_absent_parts(status: dict[str, object]) -> None:
    decoded = A.status_from_json(status)
    assert decoded.stage is None and decoded.released_at is None
    assert decoded.phase in A.PHASES
    assert all(r.last_known_good is None for r in decoded.deployments.values())


def test_the_template_hash_ignores_the_pod_template_hash_label() -> None:
    plain = template("web:1")
    labelled = {**plain, "metadata": {**plain["metadata"], "labels": {"app": "web", "pod-template-hash": "x"}}}
    assert A.template_hash(plain) == A.template_hash(labelled)
    assert A.template_hash(plain) != A.template_hash(template("web:2"))
    restarted = template("web:1", **{"kubectl.kubernetes.io/restartedAt": "2027-01-01T00:00:00Z"})
    assert A.template_hash(restarted) != A.template_hash(plain)  # `kubectl rollout restart` is a new release


def test_a_released_stage_found_paused_is_unpaused_again() -> None:
    """The status says released but the unpause never landed (a crash between the two writes, a 409)."""
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    assert verbs(world.step(T0 + 1)) == [("release", "web")]
    # the Deployment is still paused on the next pass: the release is repeated, not forgotten
    assert verbs(world.step(T0 + 2)) == [("release", "web")]
    assert world.status.phase == A.PROGRESSING and world.status.released_at == T0 + 1


def test_a_rejected_template_still_running_pods_is_restored_again() -> None:
    """The restore was refused (its resourceVersion precondition lost a race): the pods must still go back."""
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    world.step(T0 + 1)
    _roll_out(world, "web", "web:2", status=FAIL)
    assert verbs(world.step(T0 + 2)) == [("restore", "web")]
    # the restore did not land: the Deployment still runs web:2, unpaused
    result = world.step(T0 + 3)
    assert [(a.verb, a.template) for a in result.actions] == [("restore", template("web:1"))]


def test_a_rejected_template_paused_mid_rollback_with_its_pods_still_running_is_restored() -> None:
    """Re-applied while the rollback ran and the webhook was down: paused half-way, the bad pods stay."""
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    world.step(T0 + 1)
    _roll_out(world, "web", "web:2", status=FAIL)
    world.step(T0 + 2)
    world.put(deployment("web", "web:2", paused=True, generation=5, observed=5))  # pods of web:2 still there
    assert [(a.verb, a.template) for a in world.step(T0 + 3).actions] == [("restore", template("web:1"))]

def test_a_rollback_whose_restore_was_lost_is_restored_with_its_event() -> None:
    """The controller wrote the rollback's status, then crashed before the restore and its Event:
    the next controller restores once and says so on the Deployment."""
    world = _adopted(("web", 0))
    _apply(world, "web", "web:2")
    world.step(T0 + 1)
    _roll_out(world, "web", "web:2", status=FAIL)
    rolled_back = world.step(T0 + 2)
    assert [e.reason for e in rolled_back.events] == ["RevisionRejected"]
    # the crash: the status above is stored, its restore and Event are not; a new process steps anew
    resumed = world.step(T0 + 3)
    assert [(a.verb, a.template) for a in resumed.actions] == [("restore", template("web:1"))]
    assert [(e.kind, e.reason) for e in resumed.events] == [("Warning", "RevisionRejected")]
    assert "(Watchdog)" in resumed.events[0].message and "restoring the last known good" in resumed.events[0].message
    assert world.status.phase == A.ROLLED_BACK and world.status.reason == "Watchdog"
    # restored: the Deployment runs web:1 again; nothing more to write, no further Event
    _roll_out(world, "web", "web:1")
    after = world.step(T0 + 4)
    assert not after.actions and not after.events and world.status.phase == A.ROLLED_BACK


def test_stage_progress_is_the_current_stages_position_among_the_groups_stages() -> None:
    assert loop.stage_progress([0, 10, 10, 20], 10) == (2, 3)
    assert loop.stage_progress([0, 10, 20], None) == (0, 3)
    assert loop.stage_progress([0, 10], 5) == (0, 2)  # a stage whose Deployments are gone
