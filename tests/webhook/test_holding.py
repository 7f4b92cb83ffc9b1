"""Holding staged Deployments in admission: paused until released, re-asserted, fail-safe (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from autocrane import approllouts as A
from webhook import holding


def _deployment(image: str, paused: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}},
                                                      "spec": {"containers": [{"name": "app", "image": image}]}}}
    if paused is not None:
        spec["paused"] = paused
    return {"metadata": {"name": "web", "labels": {A.GROUP_LABEL: "web"}}, "spec": spec}


def _hash(image: str) -> str:
    return A.template_hash(_deployment(image)["spec"]["template"])


def _status(**record: Any) -> A.Status:
    return A.Status(deployments={"web": A.Record(last_known_good=_hash("web:1"), **record)})


PAUSE = ({"op": "add", "path": "/spec/paused", "value": True},)


def test_a_new_template_not_released_yet_is_paused_in_the_same_request() -> None:
    result = holding.decide("UPDATE", _deployment("web:1"), _deployment("web:2"), "web", _status())
    assert result.verdict == holding.HELD and result.patch == PAUSE


@pytest.mark.parametrize("paused", [None, False])
def test_an_apply_without_paused_or_with_paused_false_does_not_release_a_held_deployment(paused: bool | None) -> None:
    result = holding.decide("UPDATE", _deployment("web:2", True), _deployment("web:2", paused), "web", _status())
    assert result.patch == PAUSE


def test_the_released_template_and_the_last_known_good_pass_unchanged() -> None:
    released = _status(released=_hash("web:2"))
    assert holding.decide("UPDATE", _deployment("web:2", True), _deployment("web:2", False), "web",
                          released) == holding.Decision(holding.PASSED, f"template {_hash('web:2')} is released "
                                                                        "or the last known good")
    assert holding.decide("UPDATE", _deployment("web:2"), _deployment("web:1", False), "web", _status()).patch == ()


def test_a_rejected_template_reapplied_is_accepted_but_kept_paused() -> None:
    result = holding.decide("UPDATE", _deployment("web:1"), _deployment("web:2"), "web",
                            _status(rejected=(_hash("web:2"),)))
    assert result.patch == PAUSE and "rejected" in result.reason


def test_an_already_paused_held_deployment_needs_no_patch() -> None:
    result = holding.decide("UPDATE", _deployment("web:1"), _deployment("web:2", True), "web", _status())
    assert result.verdict == holding.HELD and result.patch == ()


def test_creates_and_deployments_new_to_the_group_pass() -> None:
    assert holding.decide("CREATE", None, _deployment("web:2"), "web", _status()).verdict == holding.PASSED
    assert holding.decide("UPDATE", _deployment("web:1"), _deployment("web:2"), "other", _status()).patch == ()


def test_without_the_rollout_status_a_new_template_is_held_and_paused_keeps_its_value() -> None:
    assert holding.decide("UPDATE", _deployment("web:1"), _deployment("web:2"), "web", None).patch == PAUSE
    keep = holding.decide("UPDATE", _deployment("web:2", True), _deployment("web:2", False), "web", None)
    assert keep.patch == PAUSE
    scale = holding.decide("UPDATE", _deployment("web:1"), _deployment("web:1"), "web", None)
    assert scale.verdict == holding.PASSED and scale.patch == ()


def _review(operation: str, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": operation, "namespace": "shop", "name": "web",
                        "object": new, "oldObject": old}}


def test_a_held_review_is_allowed_with_the_pause_as_a_json_patch_and_a_warning() -> None:
    import base64
    import json

    request = holding.parse(_review("UPDATE", _deployment("web:1"), _deployment("web:2")))
    assert (request.namespace, request.name, request.group) == ("shop", "web", "web")
    review = holding.answer(request, holding.decide_request(request, _status()))
    response = review["response"]
    assert response["uid"] == "u-1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == list(PAUSE)
    assert "held by AutoCrane" in response["warnings"][0]


def test_a_deployment_leaving_its_group_passes_untouched() -> None:
    left = _deployment("web:2")
    left["metadata"]["labels"] = {}
    request = holding.parse(_review("UPDATE", _deployment("web:1"), left))
    assert request.group is None
    review = holding.answer(request, holding.decide_request(request, _status()))
    assert "patch" not in review["response"] and review["response"]["allowed"] is True


def test_a_review_without_the_deployment_is_malformed() -> None:
    from webhook import admission

    with pytest.raises(admission.MalformedReview):
        holding.parse({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u"}})


def _rolling(image: str, updated: int) -> dict[str, Any]:
    found = _deployment(image)
    found["metadata"]["generation"] = 4
    found["status"] = {"observedGeneration": 4, "replicas": 3 + (3 - updated), "updatedReplicas": updated,
                       "availableReplicas": 3}
    return found


def test_a_rejected_template_re_applied_while_the_rollback_runs_is_refused_and_after_it_held() -> None:
    rejected = _status(rejected=(_hash("web:2"),))
    during = holding.decide("UPDATE", _rolling("web:1", updated=1), _deployment("web:2"), "web", rejected)
    assert during.verdict == holding.REFUSED and "still rolling out" in during.reason
    request = holding.parse(_review("UPDATE", _rolling("web:1", updated=1), _deployment("web:2")))
    response = holding.answer(request, during)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 409
    after = holding.decide("UPDATE", _rolling("web:1", updated=3), _deployment("web:2"), "web", rejected)
    assert after.verdict == holding.HELD and after.patch == PAUSE
