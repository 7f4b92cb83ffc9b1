"""``autocrane rollout``: the spec patches it sends and the rollout it picks (pure)."""

from __future__ import annotations

import pytest

from autocrane import approllouts
from controller.commands import rollout as rollout_command
from tests.controller.podfactory import NOW


def test_promote_and_abort_send_a_new_token_each_time_and_pin_sets_or_clears_the_version() -> None:
    first, second = (rollout_command.spec_patch("promote", NOW) for _ in range(2))
    assert first["spec"]["promote"].startswith("20260301T120000Z-") and first != second
    assert set(rollout_command.spec_patch("abort", NOW)["spec"]) == {"abort"}
    assert rollout_command.spec_patch("pin", NOW, "v2") == {"spec": {"pinVersion": "v2"}}
    assert rollout_command.spec_patch("pin", NOW, None) == {"spec": {"pinVersion": None}}
    with pytest.raises(ValueError):
        rollout_command.spec_patch("explode", NOW)


def test_the_rollout_is_found_by_source_then_by_name_and_listed() -> None:
    named = {"metadata": {"name": "models.resnet"}, "spec": {"source": "other"}}
    exact = {"metadata": {"name": "custom"}, "spec": {"source": "models/resnet"},
             "status": {"phase": "Progressing", "stageText": "1/3", "target": "v2", "lastKnownGood": "v1"}}
    assert rollout_command.find([named, exact], "models/resnet") is exact
    assert rollout_command.find([named], "models/resnet") is named
    assert rollout_command.find([], "x") is None
    lines = rollout_command.listing([exact]).splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "PHASE", "STAGE", "TARGET", "LAST-KNOWN-GOOD", "MESSAGE"]
    assert lines[1].split() == ["custom", "models/resnet", "Progressing", "1/3", "v2", "v1"]


def test_list_records_for_json_and_yaml() -> None:
    held = {"metadata": {"namespace": "shop", "name": "models"}, "spec": {"source": "models"},
            "status": {"phase": "RolledBack", "lastKnownGood": "v1", "held": ["v2"], "message": "watchdog 'app'"}}
    assert rollout_command.records([held]) == [{
        "namespace": "shop", "name": "models", "source": "models", "phase": "RolledBack", "stage": None,
        "target": None, "lastKnownGood": "v1", "held": ["v2"], "message": "watchdog 'app'"}]


def test_status_verdicts_for_a_version_and_for_the_running_rollout() -> None:
    def rollout(**status: object) -> dict[str, object]:
        return {"metadata": {"name": "models"}, "status": status}

    going = rollout(phase="Progressing", stageText="2/3", target="v2", lastKnownGood="v1")
    assert rollout_command.verdict(going, "v2")[0] == rollout_command.PENDING
    assert rollout_command.verdict(going, None) == (
        rollout_command.PENDING, "datarollout models: Progressing 2/3 -> v2")
    assert rollout_command.verdict(going, "v1")[0] == rollout_command.DONE
    done = rollout(phase="Succeeded", lastKnownGood="v2")
    assert rollout_command.verdict(done, "v2")[0] == rollout_command.DONE == rollout_command.verdict(done, None)[0]
    back = rollout(phase="RolledBack", lastKnownGood="v1", held=["v2"], message="watchdog 'app' failed")
    assert rollout_command.verdict(back, "v2") == (
        rollout_command.FAILED, "datarollout models: v2 was rolled back: watchdog 'app' failed")
    assert rollout_command.verdict(back, None)[0] == rollout_command.FAILED
    assert rollout_command.verdict(back, "v3")[0] == rollout_command.PENDING  # not started yet
    assert (rollout_command.DONE, rollout_command.FAILED, rollout_command.PENDING) == (0, 1, 3)


def test_retry_sends_a_token_and_pause_and_resume_set_the_groups_paused() -> None:
    assert set(rollout_command.spec_patch("retry", NOW)["spec"]) == {"retry"}
    assert rollout_command.spec_patch("pause", NOW) == {"spec": {"paused": True}}
    assert rollout_command.spec_patch("resume", NOW) == {"spec": {"paused": False}}


def test_a_name_picks_the_app_rollout_or_the_data_rollout_and_asks_when_both_answer() -> None:
    app, data = {"metadata": {"name": "web"}}, {"metadata": {"name": "web"}, "spec": {"source": "web"}}
    assert rollout_command.choose("promote", "web", None, app, None) == ("app", app)
    assert rollout_command.choose("promote", "web", data, None, None) == ("data", data)
    assert "--app or --data" in str(rollout_command.choose("abort", "web", data, app, None))
    assert rollout_command.choose("abort", "web", data, app, "app") == ("app", app)
    assert rollout_command.choose("retry", "web", data, app, None) == ("app", app)
    assert "no AppRollout 'web'" in str(rollout_command.choose("retry", "web", data, None, None))
    assert "app rollouts" in str(rollout_command.choose("pause", "web", data, app, "data"))


def test_the_app_rollouts_are_listed_with_their_phase_and_stage() -> None:
    lines = rollout_command.app_listing([{"metadata": {"name": "web"}, "status": {
        "phase": "Baking", "stage": 1, "reason": "Baking", "message": "stage 1: baking"}}]).splitlines()
    assert lines[0].split() == ["GROUP", "PHASE", "STAGE", "REASON", "MESSAGE"]
    assert lines[1].split()[:4] == ["web", "Baking", "1", "Baking"]


def _app_deployment(name: str, image: str, *, updated: int = 2) -> dict[str, object]:
    template = {"spec": {"containers": [{"name": "app", "image": image}]}}
    return {"metadata": {"namespace": "shop", "name": name, "generation": 2,
                         "labels": {approllouts.GROUP_LABEL: "web"}},
            "spec": {"replicas": 2, "template": template},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": updated, "availableReplicas": 2}}


def _group(phase: str, records: dict[str, dict[str, object]], **status: object) -> dict[str, object]:
    return {"metadata": {"name": "web"}, "status": {"phase": phase, "deployments": records, **status}}


def _hash(image: str) -> str:
    return approllouts.template_hash({"spec": {"containers": [{"name": "app", "image": image}]}})


def test_app_status_is_done_once_every_deployment_runs_its_last_known_good_fully() -> None:
    v1, v2 = _hash("web:1"), _hash("web:2")
    on_v2 = {"web-a": {"lastKnownGood": {"hash": v2, "template": {}}}, "web-b": {"lastKnownGood": {"hash": v2}}}
    done = rollout_command.app_verdict(_group("Healthy", on_v2), [_app_deployment("web-a", "web:2"),
                                                                 _app_deployment("web-b", "web:2")])
    assert done == (rollout_command.DONE, "approllout web: rolled out (2 Deployments on their last known good)")
    # just applied: the group still says Healthy, but web-b's new template is not its last known good yet
    pending = rollout_command.app_verdict(_group("Healthy", on_v2), [_app_deployment("web-a", "web:2"),
                                                                    _app_deployment("web-b", "web:3")])
    assert pending == (rollout_command.PENDING, "approllout web: waiting for web-b to roll out")
    half = rollout_command.app_verdict(_group("Healthy", on_v2), [_app_deployment("web-a", "web:2", updated=1)])
    assert half[0] == rollout_command.PENDING
    baking = rollout_command.app_verdict(_group("Baking", {"web-a": {"lastKnownGood": {"hash": v1}}}, stage=0,
                                                releasedAt="2026-12-01T10:00:00Z", message="stage 0: baking"),
                                         [_app_deployment("web-a", "web:2")])
    assert baking == (rollout_command.PENDING, "approllout web: Baking stage 0: stage 0: baking")
    assert rollout_command.app_verdict(_group("Stuck", on_v2), [])[0] == rollout_command.PENDING


def test_app_status_fails_once_the_group_rolled_back_or_runs_a_rejected_template() -> None:
    v1, v2 = _hash("web:1"), _hash("web:2")
    back = _group("RolledBack", {"web-a": {"lastKnownGood": {"hash": v1}, "rejected": [v2]}},
                  message="pod web-a-1: watchdog app: http 500")
    # the rollback wrote v1 back: the Deployment runs its last known good, yet the release failed
    assert rollout_command.app_verdict(back, [_app_deployment("web-a", "web:1")]) == (
        rollout_command.FAILED, "approllout web: rolled back: pod web-a-1: watchdog app: http 500")
    # re-applied by GitOps after the group moved on: the rejected template is held, still a failure
    held = _group("Healthy", {"web-a": {"lastKnownGood": {"hash": v1}, "rejected": [v2]}})
    assert rollout_command.app_verdict(held, [_app_deployment("web-a", "web:2")]) == (
        rollout_command.FAILED, "approllout web: rolled back: the templates of web-a were rejected")
