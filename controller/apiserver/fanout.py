"""Bounded fan-out for per-pod work (probes, status reads, writes) without a task per pod."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(fn: Callable[[T], Awaitable[R]], items: Sequence[T], workers: int) -> list[R]:
    """``[await fn(item) for item in items]`` by ``workers`` concurrent workers, in order.

    Never a task per item: 10,000 tasks waiting for the write rate limiter held tens of MiB at
    once, which Python keeps (bench/README.md, "The controller at 10,000 pods").
    """
    out: dict[int, R] = {}
    todo = iter(enumerate(items))

    async def worker() -> None:
        for i, item in todo:  # one iterator shared by the workers: each item is taken once
            out[i] = await fn(item)

    await asyncio.gather(*(worker() for _ in range(min(workers, len(items)))))
    return [out[i] for i in range(len(items))]
