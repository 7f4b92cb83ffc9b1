"""Time as one port: wall time, monotonic time and sleeping, so a loop can run on a manual clock.

Code that waits or measures takes a :class:`Clock` (the system's by default) instead of calling
``time.time()``, ``time.monotonic()`` and ``asyncio.sleep()`` itself. A test hands it a
:class:`ManualClock`: time then moves only when the test (or a sleep) moves it, so a whole
controller pass, with its write rate limiter, back-offs and bake times, runs in no real time and
gives the same answer every run. Pure decisions take ``now`` as an argument instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """What code that measures or waits needs of time."""

    def time(self) -> float:
        """Wall-clock POSIX seconds (for timestamps written into objects, and compared with theirs)."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back (for durations and deadlines of our own)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (zero or less: only let the other tasks run)."""
        ...


class SystemClock:
    """The machine's clocks and asyncio's sleep."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM = SystemClock()
"""The clock every program uses."""


class ManualClock:
    """A clock that moves only when told to (:meth:`advance`) or slept on; for tests.

    :meth:`sleep` advances the clock by the time asked for and yields once to the event loop, so a
    loop that sleeps between rounds runs its rounds back to back, each seeing the time move.
    """

    def __init__(self, start: float = 1_772_359_200.0, monotonic_start: float = 1_000.0) -> None:
        self._time = start  # 2026-03-01T10:00:00Z
        self._monotonic = monotonic_start
        self.slept: list[float] = []
        """Every sleep asked for, in order."""

    def time(self) -> float:
        return self._time

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._time += seconds
        self._monotonic += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


def utcnow(clock: Clock) -> dt.datetime:
    """The clock's wall time as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(clock.time(), dt.UTC)
