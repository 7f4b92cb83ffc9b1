"""The MutatingWebhookConfiguration: selectors, CEL opt-in, safe defaults, client config."""

from __future__ import annotations

import base64

import pytest

from autocrane import keys
from webhook import registration


def _webhook(**kwargs: object) -> dict:  # type: ignore[type-arg]
    config = registration.mutating_webhook_configuration(namespace="autocrane", ca_bundle=b"PEM", **kwargs)
    assert config["kind"] == "MutatingWebhookConfiguration"
    assert config["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert config["metadata"]["name"] == "autocrane-injector" and len(config["webhooks"]) == 2
    webhook: dict = config["webhooks"][0]  # type: ignore[type-arg]
    return webhook


def test_only_pod_creates_in_v1_are_sent() -> None:
    webhook = _webhook()
    assert webhook["name"] == "inject.autocrane.io"
    assert webhook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                 "resources": ["pods"], "scope": "Namespaced"}]


def test_namespaces_must_opt_in_and_system_and_own_namespaces_never_do() -> None:
    expressions = _webhook()["namespaceSelector"]["matchExpressions"]
    assert {"key": "autocrane-inject", "operator": "In", "values": ["enabled"]} in expressions
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["autocrane", "kube-node-lease", "kube-public", "kube-system"]} in expressions


def test_only_pods_with_opt_in_annotations_match() -> None:
    conditions = _webhook()["matchConditions"]
    assert conditions == [{"name": "autocrane-opt-in", "expression": (
        "has(object.metadata.annotations) && object.metadata.annotations.exists(k, "
        "k.startsWith('data.autocrane.io/') || k == 'watchdoghealthz.autocrane.io/min-ready-seconds')")}]
    assert keys.DATA_PREFIX in conditions[0]["expression"]


def test_the_defaults_are_safe_and_documented() -> None:
    webhook = _webhook()
    assert webhook["sideEffects"] == "None" and webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["matchPolicy"] == "Equivalent" and webhook["timeoutSeconds"] == 5
    assert webhook["reinvocationPolicy"] == "IfNeeded" and webhook["failurePolicy"] == "Fail"
    assert "Fail" in (registration.__doc__ or "")


def test_the_client_config_is_a_service_by_default_with_the_ca_bundle() -> None:
    client = _webhook()["clientConfig"]
    assert client["service"] == {"namespace": "autocrane", "name": "autocrane-injector", "path": "/mutate",
                                 "port": 443}
    assert base64.b64decode(client["caBundle"]) == b"PEM"


def test_tests_can_point_the_webhook_at_a_url() -> None:
    client = _webhook(url="https://127.0.0.1:8443/mutate", failure_policy="Ignore", timeout_seconds=10)["clientConfig"]
    assert client == {"url": "https://127.0.0.1:8443/mutate", "caBundle": base64.b64encode(b"PEM").decode()}


def test_no_ca_bundle_leaves_it_to_cert_manager() -> None:
    config = registration.mutating_webhook_configuration(namespace="x", ca_bundle=None)
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    text = registration.mutating_webhook_configuration(namespace="x", ca_bundle="PEM TEXT")
    assert base64.b64decode(text["webhooks"][0]["clientConfig"]["caBundle"]) == b"PEM TEXT"


@pytest.mark.parametrize("kwargs", [{"failure_policy": "Maybe"}, {"timeout_seconds": 31}, {"timeout_seconds": 0},
                                    {"service": None}])
def test_invalid_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        registration.mutating_webhook_configuration(namespace="x", ca_bundle=None, **kwargs)  # type: ignore[arg-type]


def _hold(**kwargs: object) -> dict:  # type: ignore[type-arg]
    config = registration.mutating_webhook_configuration(namespace="autocrane", ca_bundle=b"PEM", **kwargs)
    webhook: dict = config["webhooks"][1]  # type: ignore[type-arg]
    assert webhook["name"] == "hold.autocrane.io"
    return webhook


def test_the_hold_webhook_sees_only_deployments_of_a_group_and_never_their_scale() -> None:
    webhook = _hold()
    assert webhook["rules"] == [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                 "resources": ["deployments"], "scope": "Namespaced"}]  # not deployments/scale
    assert webhook["objectSelector"] == {"matchExpressions": [
        {"key": keys.ROLLOUT_GROUP_LABEL, "operator": "Exists"}]}
    assert webhook["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
         "values": ["autocrane", "kube-node-lease", "kube-public", "kube-system"]}]}
    assert webhook["sideEffects"] == "None" and webhook["timeoutSeconds"] == 5


def test_the_hold_webhook_ignores_its_own_failure_so_rollbacks_never_wait_for_it() -> None:
    assert _hold()["failurePolicy"] == "Ignore"
    assert _hold(hold_failure_policy="Fail")["failurePolicy"] == "Fail"
    assert "Ignore" in (registration.__doc__ or "")
    with pytest.raises(ValueError):
        _hold(hold_failure_policy="Sometimes")


def test_the_hold_webhook_is_served_at_hold_beside_mutate() -> None:
    assert _hold()["clientConfig"]["service"] == {"namespace": "autocrane", "name": "autocrane-injector",
                                                  "path": "/hold", "port": 443}
    assert _hold(url="https://127.0.0.1:8443/mutate")["clientConfig"]["url"] == "https://127.0.0.1:8443/hold"
