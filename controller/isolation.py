"""Fault isolation inside a pass: whatever goes wrong with one pod or one rollout stays with it.

Every value a pass reads from a pod, a ``DataRollout`` or a datadeployer's answer may be
hostile. The decoders (:mod:`autocrane.untrusted`, :mod:`autocrane.watchdogs`,
:mod:`autocrane.manifests`) turn bad values into errors that name the key; this module is the
second line, for what nobody foresaw: an exception raised while handling one pod (or one
namespace and source) is caught here, so that pod (or rollout) is left out of the rest of the
pass, every other one is handled, and the pass completes. Before it, one pod with an
out-of-range status time made every pass fail, and nothing anywhere was evicted.

Each fault is logged **once** per object and kind of failure (with the traceback: it is a bug
to fix, or a hostile value to name in a decoder), not every pass; a fault that goes away and
comes back is logged again. ``autocrane_controller_faults_total{step}`` counts every
occurrence, so an alert does not depend on the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from autocrane import untrusted
from controller import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class Faults:
    """Remembers which objects failed at which step, so each fault is logged once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str] = {}
        """(object key, step) -> the error last logged for it."""
        self.failed: set[str] = set()
        """Keys of the objects that failed since :meth:`begin` (left out of the pass' later steps)."""

    def begin(self) -> None:
        """Start a pass: nothing has failed in it yet."""
        self.failed = set()

    def record(self, key: str, step: str, error: BaseException, **fields: object) -> None:
        """Note that handling ``key`` at ``step`` raised ``error``; log it if it is new for that object."""
        self.failed.add(key)
        metrics.FAULTS.labels(step).inc()
        said = f"{type(error).__name__}: {untrusted.shown(str(error), 200)}"
        if self._seen.get((key, step)) == said:
            return
        self._seen[(key, step)] = said
        log.error("left out of this pass: handling it raised an unexpected error (logged once)",
                  exc_info=error, extra={"object": key, "step": step, "error": said, **fields})

    def call(self, key: str, step: str, fn: Callable[[], T], default: T, **fields: object) -> T:
        """``fn()``, or ``default`` after recording what it raised."""
        try:
            return fn()
        except Exception as error:
            self.record(key, step, error, **fields)
            return default

    async def acall(self, key: str, step: str, fn: Callable[[], Awaitable[T]], default: T, **fields: object) -> T:
        """``await fn()``, or ``default`` after recording what it raised."""
        try:
            return await fn()
        except Exception as error:
            self.record(key, step, error, **fields)
            return default

    def settle(self) -> None:
        """End a pass: forget the faults that did not happen again (and so the objects that are gone)."""
        self._seen = {k: v for k, v in self._seen.items() if k[0] in self.failed}
