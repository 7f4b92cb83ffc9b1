"""Whole passes on a manual clock: a watchdog that never answers, with and without --unknown-error-seconds."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from autocrane import clock, metrics
from controller import passes
from controller.watchdogs import health
from tests.controller.podfactory import T0, raw
from tests.hostile import controllerfakes as fakes

HUNG_IP = "127.16.0.7"


class HungProber(fakes.Prober):
    """The pod at HUNG_IP never answers (a timeout); every other watchdog answers 200."""

    async def get(self, url: str) -> health.ProbeResult:
        if f"//{HUNG_IP}:" in url:
            return health.ProbeResult("unknown", "no answer within 1s")
        return health.ProbeResult("ok")


def _pods() -> list[dict[str, Any]]:
    probe = {"probe.autocrane.io/app": "POD_IP:8080/watchdog"}
    hung = raw("hung", ip=HUNG_IP, annotations=dict(probe))
    return [hung, *(raw(f"web-{i}", ip=f"127.16.0.{20 + i}", annotations=dict(probe)) for i in range(3))]


def _controller(limit: float | None, manual: clock.ManualClock) -> tuple[passes.Controller, fakes.Api]:
    api = fakes.Api()
    ctl = fakes.controller(_pods(), HungProber(), api, time=manual)
    ctl.unknown_error_seconds = limit
    return ctl, api


def _passes(ctl: passes.Controller, manual: clock.ManualClock, count: int, every: float) -> None:
    for _ in range(count):
        asyncio.run(ctl.run_pass())
        manual.advance(every)


def _apply_written(ctl: passes.Controller, api: fakes.Api, name: str) -> None:
    """Let the informer see the status patches written on ``name``, as the watch would deliver them."""
    store = ctl.informers[0]
    (current,) = [p for p in store.snapshot() if p.name == name]
    obj = copy.deepcopy(next(o for o in _pods() if o["metadata"]["name"] == name))
    for patch in api.pod_patches(name):
        obj["metadata"]["annotations"].update(patch["metadata"].get("annotations") or {})
        obj["metadata"]["labels"].update(patch["metadata"].get("labels") or {})
    obj["metadata"]["resourceVersion"] = str(int(current.resource_version) + 1)
    store.apply({"type": "MODIFIED", "object": obj})


def _statuses(api: fakes.Api, name: str) -> list[str]:
    """The watchdog statuses written on ``name`` (the health label alone is written for any probed pod)."""
    return [value for body in api.pod_patches(name)
            for key, value in (body["metadata"].get("annotations") or {}).items() if key == "status.autocrane.io/app"]


def _unanswered_seconds() -> float | None:
    return metrics.REGISTRY.get_sample_value("autocrane_controller_watchdog_unanswered_seconds",
                                             {"namespace": "ns", "owner": "ReplicaSet/web-1"})


def test_by_default_a_watchdog_that_never_answers_writes_nothing_and_is_never_evicted() -> None:
    manual = clock.ManualClock(T0)
    ctl, api = _controller(None, manual)
    _passes(ctl, manual, 40, 10)  # 400 s of silence
    assert _statuses(api, "hung") == [] and api.evicted() == []
    assert _unanswered_seconds() == 390  # the alert still sees it


def test_with_the_policy_a_silence_longer_than_the_limit_is_an_error_and_then_an_eviction() -> None:
    manual = clock.ManualClock(T0)
    ctl, api = _controller(60, manual)
    _passes(ctl, manual, 6, 10)  # 0..50 s: still within the limit
    assert _statuses(api, "hung") == []
    _passes(ctl, manual, 1, 10)  # 60 s
    (status,) = _statuses(api, "hung")
    assert status.startswith("error/") and status.endswith("/probe: no answer for more than 60s (no answer within 1s)")
    assert api.pod_patches("hung")[-1]["metadata"]["labels"] == {"status.autocrane.io/health": "error"}
    assert api.evicted() == []  # the eviction policy's own minimum error time (60 s) still applies

    _apply_written(ctl, api, "hung")
    _passes(ctl, manual, 1, 10)
    assert _statuses(api, "hung") == [status], "the status is written once: its message does not change"
    _passes(ctl, manual, 5, 10)
    assert api.evicted() == ["hung"]
    assert all(name not in api.evicted() for name in ("web-0", "web-1", "web-2"))


def test_an_answer_restarts_the_count() -> None:
    manual = clock.ManualClock(T0)
    ctl, api = _controller(60, manual)
    _passes(ctl, manual, 5, 10)
    ctl.prober = fakes.Prober(failing=())  # the app answers again for one pass
    _passes(ctl, manual, 1, 10)
    assert _unanswered_seconds() == 0
    ctl.prober = HungProber()
    _passes(ctl, manual, 6, 10)  # 50 s of a new silence
    assert [s for s in _statuses(api, "hung") if s.startswith("error/")] == []
