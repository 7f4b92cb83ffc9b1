"""The controller's per-object gauges: what is no longer seen, or no longer led, leaves them."""

from __future__ import annotations

import asyncio
from typing import Any

from autocrane import metrics as core_metrics
from controller import metrics
from controller.apiserver import writer
from controller.approllouts import loop as approllouts


def _stage(namespace: str, group: str) -> float | None:
    return core_metrics.REGISTRY.get_sample_value("autocrane_controller_app_rollout_stage_info",
                                                  {"namespace": namespace, "group": group})


def _phase(namespace: str, group: str, phase: str) -> float | None:
    return core_metrics.REGISTRY.get_sample_value("autocrane_controller_app_rollout_phase_info",
                                                  {"namespace": namespace, "group": group, "phase": phase})


def _show(namespace: str, group: str) -> None:
    metrics.APP_STAGE.labels(namespace, group).set(2)
    metrics.APP_PHASE.labels(namespace, group, "RolledBack").set(1)


def test_keep_only_removes_every_label_set_of_the_objects_not_seen() -> None:
    _show("shop", "web")
    _show("shop", "gone")
    metrics.keep_only(metrics.PER_APP_ROLLOUT, {("shop", "web")})
    assert _stage("shop", "web") == 2 and _phase("shop", "web", "RolledBack") == 1
    assert _stage("shop", "gone") is None and _phase("shop", "gone", "RolledBack") is None
    metrics.drop(metrics.PER_APP_ROLLOUT, ("shop", "web"))
    assert _stage("shop", "web") is None and _phase("shop", "web", "RolledBack") is None


def test_a_replica_that_stops_leading_shows_no_rollout_or_workload() -> None:
    _show("shop", "web")
    metrics.ROLLOUT_PHASE.labels("shop", "models", "RolledBack").set(1)
    metrics.WORKLOAD_PODS.labels("shop", "ReplicaSet/web-1", "error").set(3)
    metrics.clear_leader_gauges()
    for gauge in (*metrics.PER_APP_ROLLOUT, *metrics.PER_DATA_ROLLOUT, *metrics.PER_WORKLOAD):
        assert [s for family in gauge.collect() for s in family.samples] == [], gauge


class _NoGroups:
    """An API server on which no Deployment carries the group label (the group's were deleted)."""

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        assert method == "GET" and path.endswith("/deployments"), path
        return {"items": []}


def test_a_group_whose_deployments_are_gone_leaves_the_metrics() -> None:
    _show("shop", "web")
    api = _NoGroups()
    rollouts = approllouts.AppRollouts(api, writer.Writer(api, identity="test"))  # type: ignore[arg-type]
    asyncio.run(rollouts.run_pass([], {}, lambda: True))
    assert _stage("shop", "web") is None and _phase("shop", "web", "RolledBack") is None
