"""review(AdmissionReview): echo, allow, patch, deny, warn; malformed bodies raise MalformedReview."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest

from autocrane import keys
from tests.webhook import podchecks
from webhook import admission, inject, policy, settings

SETTINGS = settings.load()
DATA = {"data.autocrane.io/models": "repo/models"}


def pod(notes: dict[str, str] | None = None, **extra_metadata: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p", "namespace": "ns", **extra_metadata}
    if notes is not None:
        metadata["annotations"] = notes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def review_of(obj: dict[str, Any] | None, *, operation: str = "CREATE", kind: str = "Pod",
              **request: Any) -> dict[str, Any]:
    group = "" if kind == "Pod" else "apps"
    body: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "operation": operation, "namespace": "ns", "userInfo": {"username": "alice"},
        "object": obj, "oldObject": None, "dryRun": False, **request}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def patched(original: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(original, patch)
    return result


def test_the_response_echoes_api_version_kind_and_uid() -> None:
    answer = admission.review(review_of(pod()), SETTINGS)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True,
                                  "auditAnnotations": {"skip-reason": policy.NOT_OPTED_IN}}


def test_an_opted_in_pod_is_allowed_with_a_patch_that_gives_the_injected_pod() -> None:
    original = pod(DATA)
    answer = admission.review(review_of(original), SETTINGS)["response"]
    assert answer["allowed"] is True and "warnings" not in answer
    result = patched(original, answer)
    assert result == inject.inject(original, SETTINGS).pod
    podchecks.assert_valid_pod(result)


def test_a_pod_without_an_annotations_map_gets_one_through_the_patch() -> None:
    original = pod(None)
    original["metadata"]["labels"] = {"app": "x"}
    original["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    notes = {keys.MIN_READY_SECONDS: "5"}
    with_notes = pod(notes)
    answer = admission.review(review_of(with_notes), SETTINGS)["response"]
    assert patched(with_notes, answer)["metadata"]["annotations"][keys.MIN_READY_SECONDS] == "5"


def test_slashes_in_annotation_keys_are_escaped_in_the_patch() -> None:
    answer = admission.review(review_of(pod(DATA)), SETTINGS)["response"]
    paths = [op["path"] for op in json.loads(base64.b64decode(answer["patch"]))]
    assert "/metadata/annotations/injector.autocrane.io~1status" in paths


def test_managed_fields_are_neither_diffed_nor_touched() -> None:
    managed = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {}}}]
    original = pod(DATA, managedFields=managed)
    patch = admission.admission_patch(original, {**inject.inject(original, SETTINGS).pod,
                                                 "metadata": {**original["metadata"], "managedFields": []}})
    assert not any(op["path"].startswith("/metadata/managedFields") for op in patch)
    answer = admission.review(review_of(original), SETTINGS)["response"]
    assert patched(original, answer)["metadata"]["managedFields"] == managed


def test_a_pod_that_does_not_opt_in_is_allowed_without_a_patch() -> None:
    answer = admission.review(review_of(pod({"app": "x"})), SETTINGS)["response"]
    assert answer == {"uid": answer["uid"], "allowed": True,
                      "auditAnnotations": {"skip-reason": policy.NOT_OPTED_IN}}


def test_non_pods_and_non_creates_are_allowed_untouched() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"annotations": DATA}}
    for body in (review_of(deployment, kind="Deployment"), review_of(pod(DATA), operation="UPDATE"),
                 review_of(None, operation="DELETE"), review_of(pod(DATA), subResource="status")):
        answer = admission.review(body, SETTINGS)["response"]
        assert answer == {"uid": answer["uid"], "allowed": True}


def test_dry_run_requests_get_the_same_patch() -> None:
    original = pod(DATA)
    normal = admission.review(review_of(original), SETTINGS)["response"]
    dry = admission.review(review_of(original, dryRun=True), SETTINGS)["response"]
    assert dry == normal and "patch" in dry


def test_malformed_annotations_deny_with_the_message_naming_the_annotation() -> None:
    answer = admission.review(review_of(pod({**DATA, keys.STORE_LOCATION: "data"})), SETTINGS)["response"]
    assert answer["allowed"] is False and "patch" not in answer
    assert answer["status"] == {"code": 400, "message": 'annotation "store.autocrane.io/location": "data" is not '
                                                        "valid: expected an absolute path like /data"}
    assert admission.outcome({"response": answer}) == "denied"


def test_conflicts_with_the_pod_deny_too() -> None:
    original = pod(DATA)
    original["spec"]["volumes"] = [{"name": "autocrane-data", "emptyDir": {}}]
    answer = admission.review(review_of(original), SETTINGS)["response"]
    assert answer["allowed"] is False and 'volume named "autocrane-data"' in answer["status"]["message"]


def test_unknown_autocrane_annotations_pass_with_warnings() -> None:
    answer = admission.review(review_of(pod({**DATA, "injector.autocrane.io/typo": "x"})), SETTINGS)["response"]
    assert answer["allowed"] is True and "patch" in answer
    assert answer["warnings"] == ['unknown annotation "injector.autocrane.io/typo" is ignored '
                                  "(see docs/injector.md for the known keys)"]


def test_an_injected_pod_comes_back_without_a_patch() -> None:
    injected = inject.inject(pod(DATA), SETTINGS).pod
    answer = admission.review(review_of(injected), SETTINGS)
    assert answer["response"] == {"uid": answer["response"]["uid"], "allowed": True,
                                  "auditAnnotations": {"skip-reason": policy.ALREADY_INJECTED}}
    assert admission.outcome(answer) == "allowed"


@pytest.mark.parametrize("body", [
    None, [], "text",
    {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "Other", "request": {"uid": "u"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}},
    review_of(None),
    review_of("not a pod"),  # type: ignore[arg-type]
])
def test_malformed_reviews_raise_malformed_review(body: Any) -> None:
    with pytest.raises(admission.MalformedReview):
        admission.review(body, SETTINGS)


def test_outcome_labels_an_injection() -> None:
    assert admission.outcome(admission.review(review_of(pod(DATA)), SETTINGS)) == "injected"


def test_a_skipped_pod_says_why_in_an_audit_annotation() -> None:
    review_request = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                               "spec": {"containers": [{"name": "app", "image": "x"}]}}},
    }
    response = admission.review(review_request, settings.InjectorSettings())["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    assert response["auditAnnotations"] == {admission.SKIP_REASON_AUDIT_KEY: policy.NOT_OPTED_IN}


def test_pods_of_one_template_share_one_computed_response_and_a_changed_spec_gets_its_own() -> None:
    def replica(name: str, image: str = "app:1") -> dict[str, Any]:
        made = pod(DATA)
        made["metadata"].update(name=name, uid=f"uid-{name}", labels={"pod-template-hash": "abc"})
        made["spec"]["containers"][0]["image"] = image
        # as the ServiceAccount admission plugin leaves it: a token volume with a random suffix
        token = f"kube-api-access-{name * 5}"
        made["spec"]["containers"][0]["volumeMounts"] = [{"name": token, "mountPath": "/var/run/secrets/x"}]
        made["spec"]["volumes"] = [{"name": token, "projected": {"sources": []}}]
        return made

    def reviewed(made: dict[str, Any]) -> dict[str, Any]:
        request = review_of(made)
        request["request"]["uid"] = made["metadata"]["uid"]
        return admission.review(request, SETTINGS)["response"]

    first = reviewed(replica("a"))
    hits = admission.CACHE.hits
    second = reviewed(replica("b"))
    assert admission.CACHE.hits == hits + 1
    assert (first["uid"], second["uid"]) == ("uid-a", "uid-b")
    assert first["patch"] == second["patch"]
    assert patched(replica("b"), second) == inject.inject(replica("b"), SETTINGS).pod

    changed = replica("c", image="app:changed-by-the-cache-test")
    hits = admission.CACHE.hits
    third = reviewed(changed)
    assert admission.CACHE.hits == hits
    assert patched(changed, third) == inject.inject(changed, SETTINGS).pod



def test_a_response_whose_patch_names_a_token_volume_is_never_shared_with_other_pods() -> None:
    replaced = [{"op": "replace", "path": "/spec/volumes", "value": [{"name": "kube-api-access-bbbbb"}]}]
    appended = [{"op": "add", "path": "/spec/volumes/1", "value": {"name": "autocrane-data"}}]
    assert not admission._shareable(json.dumps(replaced).encode())
    assert admission._shareable(json.dumps(appended).encode())
    assert admission._shareable(None)
