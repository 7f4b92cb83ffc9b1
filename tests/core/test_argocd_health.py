"""The chart's Argo CD health checks (Lua), run by a real Lua runtime the way Argo CD runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest

from autocrane import approllouts

HEALTH = Path(__file__).resolve().parents[2] / "charts" / "autocrane" / "argocd"


def _health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run a health script with ``obj`` as its global ``obj`` (what Argo CD's gopher-lua does); its ``hs``."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _table(runtime, obj)
    result = runtime.execute((HEALTH / script).read_text())
    return {k: result[k] for k in ("status", "message") if result[k] is not None}


def _table(runtime: lupa.LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _table(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_table(runtime, v) for v in value])
    return value


@pytest.mark.parametrize(("phase", "wanted"), [
    ("Healthy", "Healthy"), ("Progressing", "Progressing"), ("Baking", "Progressing"), ("Paused", "Suspended"),
    ("RolledBack", "Degraded"), ("Stuck", "Degraded")])
def test_every_app_rollout_phase_has_an_argo_cd_health(phase: str, wanted: str) -> None:
    health = _health("health-approllout.lua", {"status": {"phase": phase, "message": "stage 0: why"}})
    assert health == {"status": wanted, "message": f"{phase}: stage 0: why"}


def test_the_check_covers_every_phase_the_controller_writes() -> None:
    text = (HEALTH / "health-approllout.lua").read_text()
    assert all(f'"{phase}"' in text for phase in approllouts.PHASES)
    assert _health("health-approllout.lua", {"metadata": {}})["status"] == "Progressing"


def _deployment(paused: bool, updated: int, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"generation": 3, "labels": {approllouts.GROUP_LABEL: "web"}},
            "spec": {"replicas": 2, "paused": paused},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": updated, "availableReplicas": 2,
                       **extra}}


def test_a_held_deployment_is_suspended_with_its_group_and_a_rolled_out_one_healthy() -> None:
    held = _health("health-deployment.lua", _deployment(True, 0))
    assert held["status"] == "Suspended" and "group web" in held["message"]
    assert _health("health-deployment.lua", _deployment(False, 1))["status"] == "Progressing"
    assert _health("health-deployment.lua", _deployment(False, 2)) == {"status": "Healthy"}
    late = _deployment(False, 1, conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded",
                                             "message": "too slow"}])
    assert _health("health-deployment.lua", late) == {"status": "Degraded", "message": "too slow"}
