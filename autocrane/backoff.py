"""One exponential back-off, with a cap and optional jitter, for every retry loop (pure).

Seven loops retry after failures: the informer's list/watch, blocked evictions, the
datadeployer's init and per-set sync loops, archive downloads, after-swap notifications and the
data repository's polls. Each used to compute its own delay; they differ only in the first delay,
the cap and whether replicas must be kept out of step (jitter), so each now holds a
:class:`Backoff` and asks it for the delay after the n-th consecutive failure.

Why not tenacity: it wraps a call in a retrying decorator, and none of these loops is shaped
like that. The per-set sync loop waits on an event that a change wakes early, a blocked eviction
is retried by a later pass (the delay is remembered per pod), the poller waits on a stop event,
the download resumes where it stopped. They all need the delay, not the loop.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

_MAX_EXPONENT = 64
"""Past this many doublings every delay is at its cap anyway (and 2.0**1100 would overflow)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """``first * factor**(failures - 1)``, at most ``cap``, then cut by up to ``jitter`` of itself."""

    first: float
    """Seconds after the first failure."""
    cap: float
    """Seconds never exceeded."""
    factor: float = 2.0
    jitter: float = 0.0
    """0: exact delays. 0.5: each delay is drawn from [delay / 2, delay], so replicas that failed
    together do not retry together."""

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"back-off needs 0 < first <= cap, factor >= 1 and 0 <= jitter < 1: {self}")

    def delay(self, failures: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 for the first; 0 or less: no wait)."""
        if failures < 1:
            return 0.0
        exact = min(self.cap, self.first * self.factor ** min(failures - 1, _MAX_EXPONENT))
        return exact * uniform(1 - self.jitter, 1.0) if self.jitter else exact
