"""The informer's store folding, the write rate limiter, metric labels, the Lease timing rule, bounded_map."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from autocrane import errors, kube
from controller import fanout, informer, leader
from tests.controller.podfactory import raw


def _informer() -> informer.PodInformer:
    return informer.PodInformer(api=None)  # type: ignore[arg-type]  # apply() never touches the API


def _event(kind: str, name: str, rv: str, **kwargs: Any) -> dict[str, Any]:
    obj = raw(name, **kwargs)
    obj["metadata"]["resourceVersion"] = rv
    return {"type": kind, "object": obj}


def test_watch_events_add_update_and_delete_slim_pods_and_advance_the_resource_version() -> None:
    inf = _informer()
    inf.apply(_event("ADDED", "a", "10"))
    inf.apply(_event("ADDED", "b", "11"))
    inf.apply(_event("MODIFIED", "a", "12", phase="Failed"))
    inf.apply(_event("DELETED", "b", "13"))
    assert {k: p.phase for k, p in inf.store.items()} == {"ns/a": "Failed"}
    assert inf.resource_version == "13"


def test_a_bookmark_only_moves_the_resource_version() -> None:
    inf = _informer()
    inf.apply(_event("ADDED", "a", "10"))
    inf.apply({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "99"}}})
    assert list(inf.store) == ["ns/a"] and inf.resource_version == "99"


def test_a_410_error_event_asks_for_a_new_list_and_other_errors_are_api_errors() -> None:
    inf = _informer()
    with pytest.raises(errors.Gone):
        inf.apply({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}})
    with pytest.raises(errors.ServerError) as error:
        inf.apply({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}})
    assert error.value.status == 500


def test_the_write_limiter_lets_a_burst_through_then_paces_to_the_rate() -> None:
    async def run() -> float:
        bucket = kube.RateLimiter(rate=50, burst=5)
        started = time.monotonic()
        for _ in range(10):
            await bucket.take()
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert 0.08 <= elapsed < 1.0  # 5 free, then 5 at 50/s = 0.1 s


@pytest.mark.parametrize(("path", "resource"), [
    ("/api/v1/namespaces/x/pods/y/eviction", "pods/eviction"),
    ("/api/v1/namespaces/x/pods/y", "pods"),
    ("/api/v1/pods?watch=true", "pods"),
    ("/api/v1/namespaces/x/events", "events"),
    ("/apis/coordination.k8s.io/v1/namespaces/x/leases/l", "leases"),
])
def test_api_metrics_name_the_resource_not_the_object(path: str, resource: str) -> None:
    assert kube.resource_of(path) == resource


def test_leader_timing_must_keep_lease_above_deadline_above_retries() -> None:
    leader.Timing(15, 10, 2)
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        leader.Timing(10, 10, 2)
    with pytest.raises(ValueError):
        leader.Timing(15, 2, 2)


def test_bounded_map_keeps_the_order_and_never_runs_more_than_its_workers() -> None:
    running = most = 0

    async def slow_square(x: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running, len(asyncio.all_tasks()) - 1)  # no task per item either
        await asyncio.sleep(0.001 * (x % 3))
        running -= 1
        return x * x

    assert asyncio.run(fanout.bounded_map(slow_square, list(range(100)), 5)) == [x * x for x in range(100)]
    assert most <= 5
    assert asyncio.run(fanout.bounded_map(slow_square, [], 5)) == []
