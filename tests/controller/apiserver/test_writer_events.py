"""The writer's Event memory: one Event per object, reason (and, on Deployments, template) per window."""

from __future__ import annotations

import asyncio
from typing import Any

from autocrane import clock
from controller import plan
from controller.apiserver import writer
from controller.approllouts import decision
from tests.controller import approlloutkit as kit


class _Events:
    """An API server that accepts Events and keeps them."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        assert method == "POST" and path.endswith("/events"), path
        self.posted.append(body)
        return body


def _rejected(image: str) -> plan.Plan:
    d = kit.deployment("web-canary", image)
    return plan.Plan(app_events=(decision.Event(d, "Warning", "RevisionRejected", f"{image} rolled back"),))


def test_a_retried_restore_adds_no_event_but_another_templates_rollback_does() -> None:
    api, time = _Events(), clock.ManualClock(1_000.0)
    events = writer.Writer(api, identity="test", time=time)  # type: ignore[arg-type]
    asyncio.run(events.execute(_rejected("shop/web:2"), lambda: True))
    events.forget([])  # a pass: no pod is live, the Deployment's memory stays
    time.advance(60)
    asyncio.run(events.execute(_rejected("shop/web:2"), lambda: True))  # the restore retried, same template
    assert [e["message"] for e in api.posted] == ["shop/web:2 rolled back"]

    asyncio.run(events.execute(_rejected("shop/web:3"), lambda: True))  # a second release, rolled back too
    assert [e["message"] for e in api.posted] == ["shop/web:2 rolled back", "shop/web:3 rolled back"]
    assert api.posted[1]["involvedObject"]["kind"] == "Deployment"

    time.advance(events.event_window)
    events.forget([])
    asyncio.run(events.execute(_rejected("shop/web:2"), lambda: True))  # past the window: said again
    assert len(api.posted) == 3
