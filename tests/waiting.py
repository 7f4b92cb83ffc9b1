"""Waiting for a condition with a deadline: the one way tests wait (never a fixed sleep).

A condition is polled until it returns something truthy, which is returned; past the deadline
the test fails naming what it waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(what: str, condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.05) -> T:
    """Poll ``condition`` from a thread until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def eventually(what: str, condition: Callable[[], T | Awaitable[T]], timeout: float = 10.0,
                     interval: float = 0.02) -> T:
    """Poll ``condition`` (plain or async) inside an event loop until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
