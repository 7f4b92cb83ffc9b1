"""The eviction plan: who is evicted, who is held and why."""

from __future__ import annotations

import dataclasses

from controller import pods
from controller.evictions import decision as eviction
from controller.evictions.decision import Policy, Streak
from tests.controller.podfactory import T0, failing, pod

POLICY = Policy(observations=3, min_error_seconds=60, min_pod_age=300, max_per_pass=5, max_per_namespace=2,
                max_per_owner=1, max_failing_share=0.5)


def _healthy(n: int, owner: str = "web-1", namespace: str = "ns") -> list[pods.Pod]:
    return [pod(f"{owner}-ok{i}", owner=("ReplicaSet", owner), namespace=namespace) for i in range(n)]


def _ripe(snapshot: list[pods.Pod]) -> dict[str, Streak]:
    """Streaks as if every failing pod had been seen failing for 3 passes."""
    streaks: dict[str, Streak] = {}
    for _ in range(3):
        streaks = eviction.observe(streaks, snapshot, T0)
    return streaks


def _plan(snapshot: list[pods.Pod], policy: Policy = POLICY, **kwargs: object) -> eviction.Plan:
    return eviction.plan(snapshot, _ripe(snapshot), policy, T0, **kwargs)  # type: ignore[arg-type]


def _evicted(plan: eviction.Plan) -> list[str]:
    return [d.pod.name for d in plan.evict]


def _skips(plan: eviction.Plan) -> dict[str, str]:
    return {d.pod.name: d.reason for d in plan.skipped}


def test_a_pod_failing_long_enough_for_enough_observations_is_evicted() -> None:
    plan = _plan([failing("web-1-bad"), *_healthy(3)])
    assert _evicted(plan) == ["web-1-bad"]
    assert "600s over 3 observations" in plan.evict[0].message


def test_a_pod_seen_failing_fewer_times_than_required_waits() -> None:
    snapshot = [failing("web-1-bad"), *_healthy(3)]
    streaks = eviction.observe(eviction.observe({}, snapshot, T0), snapshot, T0)
    plan = eviction.plan(snapshot, streaks, POLICY, T0)
    assert plan.evict == () and plan.waiting == 1


def test_a_pod_failing_for_less_than_the_minimum_time_waits_however_often_it_was_seen() -> None:
    plan = _plan([failing("web-1-bad", since=30), *_healthy(3)])
    assert plan.evict == () and plan.waiting == 1


def test_a_streak_ends_when_the_pod_recovers() -> None:
    bad = failing("web-1-bad")
    streaks = _ripe([bad])
    assert eviction.observe(streaks, [pod("web-1-bad")], T0) == {}


def test_a_pod_whose_status_time_is_unreadable_is_timed_from_when_the_controller_first_saw_it() -> None:
    bad = pod("web-1-bad", annotations={"status.autocrane.io/app": "garbage"})
    snapshot = [bad, *_healthy(3)]
    assert eviction.plan(snapshot, _ripe(snapshot), POLICY, T0).evict == ()
    assert _evicted(eviction.plan(snapshot, _ripe(snapshot), POLICY, T0 + 61)) == ["web-1-bad"]


def test_bare_daemonset_mirror_and_opted_out_pods_are_never_evicted() -> None:
    snapshot = [
        failing("bare", owner=None),
        failing("ds", owner=("DaemonSet", "agent")),
        failing("mirror", annotations={"kubernetes.io/config.mirror": "x"}, owner=("Node", "n1")),
        failing("optout", annotations={"eviction.autocrane.io/opt-out": "true"}, owner=("ReplicaSet", "o")),
    ]
    plan = _plan(snapshot)
    assert plan.evict == ()
    assert _skips(plan) == {"bare": "bare-pod", "ds": "daemonset", "mirror": "mirror-pod", "optout": "opted-out"}


def test_terminating_pods_are_neither_candidates_nor_counted_by_the_breaker() -> None:
    plan = _plan([failing("web-1-gone", terminating=True), failing("web-1-bad"), *_healthy(2)])
    assert _evicted(plan) == ["web-1-bad"] and plan.breakers == ()


def test_a_pod_younger_than_the_minimum_age_is_held() -> None:
    plan = _plan([failing("web-1-new", age=100), *_healthy(3)])
    assert _skips(plan) == {"web-1-new": "too-young"}


def test_the_circuit_breaker_holds_every_pod_of_an_owner_when_most_of_them_fail() -> None:
    plan = _plan([failing("web-1-a"), failing("web-1-b"), *_healthy(1)])
    assert plan.evict == ()
    assert _skips(plan) == {"web-1-a": "circuit-breaker", "web-1-b": "circuit-breaker"}
    (breaker,) = plan.breakers
    assert (breaker.owner.name, breaker.failing, breaker.total) == ("web-1", 2, 3)
    assert "2 of 3 pods of ReplicaSet web-1" in plan.skipped[0].message


def test_exactly_the_allowed_share_failing_does_not_trip_the_breaker() -> None:
    plan = _plan([failing("web-1-a"), *_healthy(1)])
    assert _evicted(plan) == ["web-1-a"] and plan.breakers == ()


def test_the_breaker_of_one_owner_does_not_hold_another_owner() -> None:
    snapshot = [failing("web-1-a"), failing("web-1-b"), failing("api-1-a", owner=("ReplicaSet", "api-1")),
                *_healthy(3, owner="api-1")]
    plan = _plan(snapshot)
    assert _evicted(plan) == ["api-1-a"]
    assert [b.owner.name for b in plan.breakers] == ["web-1"]


def test_one_pod_per_owner_per_pass_and_the_longest_failing_goes_first() -> None:
    snapshot = [failing("web-1-a", since=100), failing("web-1-b", since=900), *_healthy(8)]
    plan = _plan(snapshot)
    assert _evicted(plan) == ["web-1-b"]
    assert _skips(plan) == {"web-1-a": "cap-per-owner"}


def test_caps_per_namespace_and_per_pass_hold_the_rest() -> None:
    snapshot = []
    for ns in ("a", "b", "c"):
        for owner in ("x", "y", "z"):
            snapshot += [failing(f"{owner}-bad", namespace=ns, owner=("ReplicaSet", owner)),
                         *_healthy(3, owner=owner, namespace=ns)]
    plan = _plan(snapshot)
    assert len(plan.evict) == 5
    per_namespace = {ns: sum(d.pod.namespace == ns for d in plan.evict) for ns in "abc"}
    assert max(per_namespace.values()) == 2
    reasons = {d.reason for d in plan.skipped}
    assert reasons == {"cap-per-namespace", "cap-per-pass"}


def test_a_pod_in_a_429_back_off_waits_without_a_new_report() -> None:
    bad = failing("web-1-bad")
    plan = _plan([bad, *_healthy(3)], backoff_until={bad.uid: T0 + 30})
    assert plan.evict == () and plan.skipped == () and plan.waiting == 1


def test_the_plan_is_the_same_when_computed_twice() -> None:
    snapshot = [failing("web-1-a"), failing("api-1-a", owner=("ReplicaSet", "api-1")), *_healthy(5)]
    streaks = _ripe(snapshot)
    assert eviction.plan(snapshot, streaks, POLICY, T0) == eviction.plan(snapshot, streaks, POLICY, T0)


def test_a_stricter_share_trips_on_fewer_failures() -> None:
    policy = dataclasses.replace(POLICY, max_failing_share=0.2)
    plan = _plan([failing("web-1-a"), *_healthy(3)], policy)
    assert plan.evict == () and len(plan.breakers) == 1
