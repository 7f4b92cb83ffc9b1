"""Bounded fan-out: results in order, never more work in flight than workers, no task per item."""

from __future__ import annotations

import asyncio

from controller.apiserver import fanout


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
