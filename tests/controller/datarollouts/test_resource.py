"""DataRollout objects <-> rollout state (pure): names, round trips, conditions, write only on change."""

from __future__ import annotations

import dataclasses

from controller.datarollouts import decision as datarollout
from controller.datarollouts import resource
from tests.controller.podfactory import T0


def test_object_names_follow_the_source_or_fall_back_to_a_hash() -> None:
    assert resource.object_name("models/resnet_50") == "models.resnet-50"
    assert resource.object_name("a_/b").startswith("source-")


def _object(status: dict | None = None, **spec: object) -> dict:
    return {"metadata": {"namespace": "ns", "name": "models", "resourceVersion": "7", "generation": 3},
            "spec": {"source": "models", **spec}, "status": status or {}}


def test_the_status_round_trips_through_the_object() -> None:
    old = resource.from_json(_object())
    running = datarollout.State(progress=datarollout.Progressing("b", 1, T0 - 100, T0 - 10), last_known_good="a",
                                held=("x",), observed_promote="p1", message="stage 2/3: baking",
                                members=4, on_target=2, acknowledged=3)
    status = resource.status_json(running, 3, old, T0)
    assert status["stage"] == 2 and status["stageText"] == "2/3" and status["observedGeneration"] == 3
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Progressing": ("True", "Stage2"), "Complete": ("False", "Progressing"),
                          "RolledBack": ("False", "Progressing")}
    again_raw = {k: v for k, v in status.items() if v is not None}
    again = resource.from_json(_object(again_raw))
    assert again.state == running
    assert resource.status_patch(again, again_raw, resource.status_json(again.state, 3, again, T0 + 50)) is None
    done = dataclasses.replace(running, progress=datarollout.Idle(datarollout.SUCCEEDED))
    patch = resource.status_patch(again, again_raw, resource.status_json(done, 3, again, T0 + 60))
    assert patch is not None and patch["metadata"] == {"resourceVersion": "7"}
    assert patch["status"]["target"] is None and patch["status"]["stage"] == 0
    complete = {c["type"]: c for c in patch["status"]["conditions"]}["Complete"]
    assert complete["status"] == "True" and complete["lastTransitionTime"] == "2026-03-01T12:01:00Z"


def test_a_spec_is_read_with_its_manual_controls_and_bad_stages_are_reported() -> None:
    one = resource.from_json(_object(stages=["1", "50%", "100%"], bakeSeconds=5, pinVersion="v", promote="t",
                                  abort="u", progressDeadlineSeconds=30))
    assert one.spec == datarollout.Spec("models", ("1", "50%", "100%"), 5.0, 30.0, "v", "t", "u")
    bad = resource.from_json(_object(stages=["1", "50%"]))
    assert bad.spec.stages is None and "spec.stages ignored" in (bad.problem or "")


def test_a_torn_status_starts_over_rather_than_guessing_a_stage() -> None:
    one = resource.from_json(_object({"phase": "Progressing", "target": "b", "stage": 2}))
    assert one.state.target is None and one.state.phase == datarollout.IDLE
