"""Parsing a pod's autocrane.io annotations: typed records, errors naming the key, warnings for unknown keys."""

from __future__ import annotations

import pytest

from autocrane import datasets, errors, keys
from webhook import options


def _error(found: dict[str, str]) -> str:
    with pytest.raises(errors.AnnotationError) as caught:
        options.parse_pod(found)
    return str(caught.value)


def test_no_annotations_at_all_is_a_pod_that_asks_for_nothing() -> None:
    for found in (None, {}):
        request, warnings = options.parse_pod(found)
        assert not request.opted_in and warnings == []
        assert request.init_position == "first" and request.inject and request.status is None


def test_data_annotations_become_data_sets_sorted_by_name() -> None:
    request, warnings = options.parse_pod({
        "data.autocrane.io/models": " repo/models ", "data.autocrane.io/config": "repo/config", "app": "x"})
    assert request.data_sets == (datasets.DataSet("config", "repo/config"),
                                 datasets.DataSet("models", "repo/models"))
    assert request.wants_datadeployer and not request.wants_watchdoghealthz and warnings == []


def test_min_ready_seconds_opts_into_watchdoghealthz() -> None:
    request, _ = options.parse_pod({keys.MIN_READY_SECONDS: "30"})
    assert request.min_ready_seconds == 30 and request.wants_watchdoghealthz and request.opted_in
    assert options.parse_pod({keys.MIN_READY_SECONDS: "0"})[0].min_ready_seconds == 0


def test_store_location_is_normalised() -> None:
    for raw, normal in (("/data/", "/data"), ("//srv//data/./x", "/srv/data/x"), ("/a.b/c_d-e", "/a.b/c_d-e")):
        assert options.parse_pod({keys.STORE_LOCATION: raw})[0].store_location == normal


def test_a_relative_store_location_is_refused_with_the_documented_message() -> None:
    assert _error({keys.STORE_LOCATION: "data"}) == (
        'annotation "store.autocrane.io/location": "data" is not valid: expected an absolute path like /data')


@pytest.mark.parametrize(("value", "expected"), [
    ("/", "not the root directory"),
    ("/data/../etc", "without '..' segments"),
    ("/proc", "outside /proc"),
    ("/sys/fs", "outside /proc"),
    ("/dev/shm", "outside /proc"),
    ("/var/run/secrets/kubernetes.io", "outside /proc"),
    ("/data dir", "made of letters"),
    ("", "an absolute path"),
])
def test_unsafe_store_locations_are_refused_naming_the_key(value: str, expected: str) -> None:
    message = _error({keys.STORE_LOCATION: value})
    assert message.startswith('annotation "store.autocrane.io/location"') and expected in message


def test_a_location_that_merely_starts_like_a_reserved_path_is_fine() -> None:
    assert options.parse_pod({keys.STORE_LOCATION: "/devdata"})[0].store_location == "/devdata"


@pytest.mark.parametrize("value", ["-1", "1.5", "thirty", "", "99999999999", "٣"])
def test_min_ready_seconds_must_be_a_whole_number(value: str) -> None:
    assert _error({keys.MIN_READY_SECONDS: value}).endswith(
        "expected a whole number of seconds >= 0, like 30")
    assert '"watchdoghealthz.autocrane.io/min-ready-seconds"' in _error({keys.MIN_READY_SECONDS: value})


@pytest.mark.parametrize("key", ["data.autocrane.io/Models", "data.autocrane.io/", "data.autocrane.io/a_b",
                                 "data.autocrane.io/-x", "data.autocrane.io/" + "x" * 64])
def test_data_set_names_must_be_dns_labels(key: str) -> None:
    message = _error({key: "repo/x"})
    assert message.startswith(f'annotation "{key}"') and "DNS-1123 label" in message


def test_an_empty_data_source_is_refused() -> None:
    assert _error({"data.autocrane.io/models": "  "}).endswith("expected a non-empty data-repository source, "
                                                              "like models/resnet")


@pytest.mark.parametrize(("key", "value", "expected"), [
    (keys.NATIVE_SIDECAR, "yes", "true or false"),
    (keys.INJECT, "0", "true or false"),
    (keys.INIT_POSITION, "middle", "first or last"),
    ("injector.autocrane.io/datadeployer-cpu", "lots", "a positive Kubernetes quantity like 100m or 1"),
    ("injector.autocrane.io/datadeployer-memory", "-64Mi", "a positive Kubernetes quantity like 64Mi or 1Gi"),
    ("injector.autocrane.io/watchdoghealthz-memory-limit", "0", "a positive Kubernetes quantity like 64Mi"),
    (keys.INJECTOR_STATUS, "{not json", "the JSON the injector writes"),
    (keys.INJECTOR_STATUS, '{"containers": "x"}', "the JSON the injector writes"),
])
def test_malformed_overrides_name_the_key_and_the_expected_form(key: str, value: str, expected: str) -> None:
    message = _error({key: value})
    assert message.startswith(f'annotation "{key}"') and expected in message


def test_a_request_larger_than_its_limit_is_refused() -> None:
    message = _error({"injector.autocrane.io/datadeployer-memory": "1Gi",
                      "injector.autocrane.io/datadeployer-memory-limit": "512Mi"})
    assert message == ('annotation "injector.autocrane.io/datadeployer-memory": "1Gi" is not valid: expected a '
                       "request no larger than injector.autocrane.io/datadeployer-memory-limit (512Mi)")


def test_overrides_are_parsed() -> None:
    request, warnings = options.parse_pod({
        keys.NATIVE_SIDECAR: "True", keys.INIT_POSITION: "last", keys.INJECT: "false",
        "injector.autocrane.io/datadeployer-cpu": "250m", "injector.autocrane.io/watchdoghealthz-memory-limit": "1e8"})
    assert (request.native_sidecar, request.init_position, request.inject) == (True, "last", False)
    assert request.resources_for("datadeployer") == options.ResourceOverrides(cpu_request="250m")
    assert request.resources_for("watchdoghealthz").memory_limit == "1e8" and warnings == []


def test_non_string_values_are_refused_as_kubernetes_would() -> None:
    assert _error({keys.MIN_READY_SECONDS: 30}).endswith(  # type: ignore[dict-item]
        "expected a string (quote the value in YAML)")


def test_unknown_autocrane_keys_are_warnings_not_errors() -> None:
    request, warnings = options.parse_pod({
        "injector.autocrane.io/natve-sidecar": "true", "store.autocrane.io/size": "1Gi",
        "watchdoghealthz.autocrane.io/port": "1", "frobnicate.autocrane.io/x": "1", "autocrane.io/x": "1",
        "example.com/autocrane.io": "not ours", "notautocrane.io/x": "not ours either"})
    assert not request.opted_in
    assert len(warnings) == 5
    assert all(w.startswith('unknown annotation "') for w in warnings)
    assert any('"injector.autocrane.io/natve-sidecar"' in w for w in warnings)
    assert any('"frobnicate.autocrane.io/x"' in w and "no AutoCrane component" in w for w in warnings)
    assert all(len(w) <= 120 for w in warnings)  # Kubernetes asks for short admission warnings


def test_keys_owned_by_the_controller_and_sidecars_are_recognised_silently() -> None:
    _, warnings = options.parse_pod({
        "probe.autocrane.io/http": "http://:8080/healthz", "status.autocrane.io/http": "Healthy",
        keys.HEALTH_LABEL: "Healthy", "request.data.autocrane.io/models": "v2",
        "status.data.autocrane.io/models": "v1"})
    assert warnings == []


def test_the_status_annotation_round_trips() -> None:
    status = options.InjectionStatus(("a",), ("b", "c"), ("v",), "1.0", "abc")
    assert options.parse_pod({keys.INJECTOR_STATUS: status.to_json()})[0].status == status


def test_quantities_are_compared_by_value() -> None:
    assert options.parse_quantity("100m") == options.parse_quantity("0.1")
    assert options.parse_quantity("1Ki") == 1024 and options.parse_quantity("1k") == 1000
    assert options.parse_quantity("1e3") == 1000 and options.parse_quantity("1.5Gi") == 1.5 * 2**30
    for bad in ("", "1.2.3", "Mi", "1 Mi", "1mi", "-1"):
        assert options.parse_quantity(bad) is None


def test_opts_in_matches_the_webhook_match_condition() -> None:
    assert options.opts_in({"data.autocrane.io/x": "y"})
    assert options.opts_in({keys.MIN_READY_SECONDS: "1"})
    assert not options.opts_in({keys.STORE_LOCATION: "/x"}) and not options.opts_in(None)


def test_the_eviction_opt_out_is_a_known_key_and_raises_no_warning() -> None:
    _, warnings = options.parse_pod({keys.EVICTION_OPT_OUT: "true", "data.autocrane.io/m": "s"})
    assert warnings == []
    _, warnings = options.parse_pod({"eviction.autocrane.io/opt-uot": "true", "data.autocrane.io/m": "s"})
    assert any("eviction.autocrane.io/opt-uot" in w for w in warnings)
