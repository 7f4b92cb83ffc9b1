"""Whole passes on a manual clock: the pass, the write rate limiter and the writer read one clock.

The controller runs for real (pass, writer, data rollouts, decoders, eviction plan) over the
in-memory API server and prober of ``tests.hostile.controllerfakes``, behind the same client-side
rate limiter ``autocrane.kube.Kube`` puts in front of writes. No real time passes: every wait is a
sleep on the :class:`autocrane.clock.ManualClock`, and every time written comes from it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from autocrane import clock, kube, untrusted
from controller import passes
from tests.controller.podfactory import T0
from tests.hostile import controllerfakes as fakes


class RateLimited:
    """The fake API server behind the write rate limiter, as ``autocrane.kube.Kube`` puts it."""

    def __init__(self, api: fakes.Api, limiter: kube.RateLimiter) -> None:
        self.api, self.limiter = api, limiter

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method != "GET":
            await self.limiter.take()
        return await self.api.request(method, path, **kwargs)


REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."


class Budgeted(fakes.Api):
    """Refuses every eviction with 429, as a PodDisruptionBudget that allows none does."""

    async def request(self, method: str, path: str, *, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        if path.endswith("/eviction"):
            self.writes.append((method, path, body))
            raise kube.error(f"{method} {path}", 429, {"reason": "TooManyRequests", "message": REFUSED})
        return await super().request(method, path, body=body, **kwargs)


def _run(ctl: passes.Controller) -> passes.Report:
    return asyncio.run(ctl.run_pass())


def test_a_whole_pass_waits_for_the_rate_limiter_on_the_manual_clock_and_writes_its_times() -> None:
    manual = clock.ManualClock(T0)
    api = fakes.Api()
    ctl = fakes.controller(fakes.neighbours(), fakes.Prober(), RateLimited(api, kube.RateLimiter(2, 2, time=manual)),
                           time=manual)

    report = _run(ctl)

    assert report.evicted == ("ns/victim",) and report.status_writes == 4 and report.rollout_writes == 1
    writes = len(api.writes)
    assert writes > 2 and manual.slept == [0.5] * (writes - 2)  # a burst of 2, then 2 writes per second
    assert manual.time() == T0 + 0.5 * (writes - 2)  # all the time that passed is the limiter's waits
    (event,) = [body for method, path, body in api.writes if path.endswith("/events")]
    assert event["reason"] == "Evicted" and T0 <= untrusted.timestamp(event["firstTimestamp"]) <= manual.time()
    status = fakes.rollout_of(api, "data")
    assert status is not None and status.state.started is not None
    assert T0 <= status.state.started <= manual.time()  # the rollout's clock is the pass's


def test_a_blocked_eviction_is_tried_again_after_its_back_off_on_the_manual_clock() -> None:
    manual = clock.ManualClock(T0)
    api = Budgeted()
    ctl = fakes.controller(fakes.neighbours(), fakes.Prober(), api, time=manual)

    def attempts() -> int:
        return len([path for _, path, _ in api.writes if path.endswith("/eviction")])

    assert _run(ctl).evicted == () and attempts() == 1
    blocked = [body for _, path, body in api.writes if path.endswith("/events")]
    assert [e["reason"] for e in blocked] == ["EvictionBlocked"] and "retrying in 15s" in blocked[0]["message"]
    manual.advance(14)
    _run(ctl)
    assert attempts() == 1, "within its 15 s back-off the pod is not tried again"
    manual.advance(2)
    _run(ctl)
    assert attempts() == 2, "after it, it is"
