"""``autocrane status``: the table of pods, watchdogs, health and requested data versions."""

from __future__ import annotations

from typing import Any

from controller.commands import status
from tests.controller.podfactory import NOW, raw, stamp


def test_the_table_shows_health_watchdogs_with_their_age_and_requested_versions() -> None:
    web = raw("web-1", labels={"status.autocrane.io/health": "error"}, annotations={
        "status.autocrane.io/app": f"error/{stamp(180)}/probe: http 500",
        "status.autocrane.io/disk": f"info/{stamp(7200)}/fine",
        "data.autocrane.io/models": "models/resnet",
        "request.data.autocrane.io/models": '{"version":"20260102T030405Z-1a2b3c4d5e6f"}',
    })
    plain = raw("api-1", namespace="a")
    lines = status.table([web, plain], NOW).splitlines()
    assert lines[0].split() == ["NAMESPACE", "POD", "HEALTH", "WATCHDOGS", "DATA"]
    assert lines[1].split() == ["a", "api-1", "-", "-", "-"]
    assert lines[2].split() == ["ns", "web-1", "error", "app=error(3m),disk=info(2h)",
                                "models=20260102T030405Z-1a2b3c4d5e6f"]


def test_unreadable_statuses_and_requests_are_shown_as_such() -> None:
    pod = raw("x", annotations={"status.autocrane.io/app": "garbage", "data.autocrane.io/m": "src",
                                "request.data.autocrane.io/m": "not json"})
    row = status.table([pod], NOW).splitlines()[1].split()
    assert row[3:] == ["app=unreadable", "m=invalid"]


def test_a_data_set_without_a_request_shows_a_dash() -> None:
    row = status.table([raw("x", annotations={"data.autocrane.io/m": "src"})], NOW).splitlines()[1].split()
    assert row[-1] == "m=-"


def test_acknowledged_versions_and_the_rollout_follow_the_requested_version() -> None:
    pod = raw("x", annotations={"data.autocrane.io/m": "src", "request.data.autocrane.io/m": '{"version":"v2"}',
                                "status.data.autocrane.io/m": '{"version":"v1","deployedAt":null}'})
    rollout = {"metadata": {"namespace": "ns", "name": "src"}, "spec": {"source": "src"},
               "status": {"phase": "Progressing", "stageText": "2/3", "target": "v2"}}
    other = {"metadata": {"namespace": "elsewhere", "name": "src"}, "spec": {"source": "src"}, "status": {}}
    row = status.table([pod], NOW, [other, rollout]).splitlines()[1]
    assert row.endswith("m=v2/v1 (src: Progressing 2/3 -> v2)")


def test_the_records_for_json_and_yaml_hold_what_the_table_shows() -> None:
    pod = raw("x", labels={"status.autocrane.io/health": "error"}, annotations={
        "status.autocrane.io/app": f"error/{stamp(90)}/probe: http 500", "status.autocrane.io/bad": "fatal/x/y",
        "data.autocrane.io/m": "src", "request.data.autocrane.io/m": '{"version":"v2"}',
        "status.data.autocrane.io/m": '{"version":"v1","deployedAt":null}'})
    rollout = {"metadata": {"namespace": "ns", "name": "src"}, "spec": {"source": "src"},
               "status": {"phase": "Progressing", "stageText": "2/3", "target": "v2", "lastKnownGood": "v1"}}
    (record,) = status.records([pod], [rollout])
    assert record["namespace"] == "ns" and record["name"] == "x" and record["health"] == "error"
    assert record["watchdogs"]["app"] == {"level": "error", "time": stamp(90), "message": "probe: http 500"}
    assert record["watchdogs"]["bad"]["level"] == "unreadable"
    assert record["data"] == {"m": {"source": "src", "requested": "v2", "acknowledged": "v1", "rollout": {
        "name": "src", "phase": "Progressing", "stage": "2/3", "target": "v2", "lastKnownGood": "v1"}}}


def test_each_group_shows_its_stages_their_state_the_failing_new_pods_and_the_next_command() -> None:
    from autocrane import approllouts as A
    from controller.commands import status as status_command
    from tests.controller import approlloutkit as kit

    def raw(name: str, stage: int, image: str, paused: bool) -> dict[str, Any]:
        return {"metadata": {"namespace": "shop", "name": name, "uid": f"uid-{name}", "generation": 2,
                             "labels": {A.GROUP_LABEL: "web", A.STAGE_LABEL: str(stage)}},
                "spec": {"replicas": 1, "paused": paused, "template": kit.template(image)},
                "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}

    v1, v2 = A.template_hash(kit.template("web:1")), A.template_hash(kit.template("web:2"))
    rs = {"metadata": {"namespace": "shop", "name": "canary-2", "ownerReferences": [
        {"kind": "Deployment", "name": "canary", "uid": "uid-canary", "controller": True}]},
          "spec": {"template": kit.template("web:2")}}
    pod = {"metadata": {"namespace": "shop", "name": "canary-2-a", "uid": "p", "labels": {
        "status.autocrane.io/health": "error"}, "ownerReferences": [
        {"kind": "ReplicaSet", "name": "canary-2", "uid": "rs", "controller": True}]}}
    status = A.Status(phase=A.BAKING, stage=0, released_at=kit.T0, rolled_out_at=kit.T0 + 10,
                      message="stage 0: baking", deployments={
                          "canary": A.Record(stage=0, last_known_good=v1, released=v2),
                          "zone": A.Record(stage=1, last_known_good=v1)})
    rollout = {"metadata": {"namespace": "shop", "name": "web"}, "spec": {"bakeSeconds": 60},
               "status": A.status_to_json(status)}
    text = status_command.groups_table([raw("canary", 0, "web:2", False), raw("zone", 1, "web:2", True)], [rs],
                                       [pod], [rollout], kit.T0 + 40)
    lines = text.splitlines()
    assert lines[0] == "group shop/web: Baking (stage 0: baking)"
    assert lines[2].split() == ["0", "canary", "web:2", "Baking", "(30s", "left)", "canary-2-a"]
    assert lines[3].split() == ["1", "zone", "web:2", "Held", "-"]
    assert "autocrane rollout promote web -n shop" in lines[4]
    assert status_command.groups_table([], [], [], [], kit.T0) == ""
