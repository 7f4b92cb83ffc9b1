"""Hostile input at the injector webhook (issue 8), through its ASGI app as the API server reaches it.

Every case the issue found is a named test here, by defect: a request-sized cache (3), "internal
error" where a denial naming the field belongs (5), validators passing a trailing newline (7), the
status annotation deleting the user's containers (8), unbounded responses (11). The property tests
feed arbitrary AdmissionReviews: the answer is always a 200 AdmissionReview that allows or denies
(never with code 500), or a 4xx, never a 5xx. docs/injector.md "Limits" lists the bounds tested here.
"""

from __future__ import annotations

import base64
import copy
import gc
import json
import tracemalloc
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from autocrane import caching, datasets, errors, inpod, keys, untrusted
from tests.hostile import podstrategies
from webhook import admission, containers, inject, options, server, settings

INJECTOR = settings.load(None, {})
CLIENT = TestClient(server.admission_app(INJECTOR), raise_server_exceptions=False)
DATA = {"data.autocrane.io/models": "models/v1"}
MIB = 1 << 20


def review(pod: Any, uid: str = "uid-1") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "CREATE", "namespace": "shop", "object": pod}}


def pod(notes: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {**DATA, **(notes or {})}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec}}


def admit(obj: Any, uid: str = "uid-1") -> dict[str, Any]:
    """The AdmissionReview's response for ``obj``; the HTTP answer must be a 200."""
    answer = CLIENT.post("/mutate", content=json.dumps(review(obj, uid)), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text[:300]
    response: dict[str, Any] = answer.json()["response"]
    return response


def denial(obj: Any) -> str:
    """The denial message for ``obj``: a 400 in words, never the 500 of a bug."""
    response = admit(obj)
    assert response["allowed"] is False and response["status"]["code"] == 400, response
    message: str = response["status"]["message"]
    return message


def patched(obj: dict[str, Any]) -> dict[str, Any]:
    response = admit(obj)
    assert response["allowed"] is True, response
    if "patch" not in response:
        return obj
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(obj), json.loads(base64.b64decode(response["patch"])))
    return result


RAW = "<raw JSON here>"


def with_raw(body: dict[str, Any], raw: str) -> bytes:
    """``body`` as JSON with the value ``RAW`` replaced by ``raw`` (nesting json.dumps could not write)."""
    return json.dumps(body).replace(json.dumps(RAW), raw, 1).encode()


def post(body: bytes) -> Any:
    return CLIENT.post("/mutate", content=body, headers={"content-type": "application/json"})


def nested(levels: int) -> dict[str, Any]:
    """A mapping nested ``levels`` deep (``{}`` is one level), built without recursion."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# --- defect 3: caches held request-sized keys --------------------------------------------------


def test_a_pod_with_a_1_mb_env_value_is_admitted_and_not_cached() -> None:
    big = pod(DATA)
    big["spec"]["containers"][0]["env"] = [{"name": "BIG", "value": "x" * 1_000_000}]
    before = (len(admission.CACHE), admission.CACHE.bytes)
    assert patched(big)["spec"]["containers"][0]["env"] == big["spec"]["containers"][0]["env"]
    assert (len(admission.CACHE), admission.CACHE.bytes) == before


def test_a_pod_with_a_1_mb_probe_annotation_is_not_cached_by_the_parser_either() -> None:
    big = pod({"probe.autocrane.io/app": "http://127.0.0.1:8080/?" + "x" * 1_000_000})
    admission.CACHE.clear()
    options.PARSED.clear()
    assert admit(big)["allowed"] is True
    assert len(options.PARSED) == 0 and options.PARSED.bytes == 0
    assert len(admission.CACHE) == 0


def test_the_caches_stay_within_their_bytes_whatever_is_admitted() -> None:
    admission.CACHE.clear()
    options.PARSED.clear()
    for index in range(300):  # each just under the response cache's per-entry bound: 300 would be 33 MiB
        obj = pod({"probe.autocrane.io/app": f"{index}" + "p" * 7000})
        obj["spec"]["containers"][0]["env"] = [{"name": "V", "value": f"{index}" + "v" * 100_000}]
        assert admit(obj)["allowed"] is True
    assert 0 < admission.CACHE.bytes <= admission.CACHE.max_bytes == 16 * MIB
    assert 0 < options.PARSED.bytes <= options.PARSED.max_bytes == 4 * MIB


def test_the_response_cache_holds_about_the_bytes_it_counts() -> None:
    """orjson's bytes hold ~8 times their length: a key kept as orjson wrote it was 8 times its count."""
    admission.CACHE.clear()
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for index in range(100):  # no token volume: the key is not rewritten (and so not copied) by the regex
            assert admit(pod({"probe.autocrane.io/app": f"{index}" + "p" * 2000}))["allowed"] is True
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert len(admission.CACHE) == 100
    assert held < 2 * admission.CACHE.bytes, (held, admission.CACHE.bytes)


def test_admitting_pods_with_1_mb_values_leaves_no_memory_behind() -> None:
    """Nothing else (logs, metrics, exceptions, the client) keeps the large objects alive."""
    for index in range(3):  # warm up: imports, the first log line, metric children
        admit(pod({"probe.autocrane.io/app": f"{index}"}))
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for index in range(20):
            obj = pod({"probe.autocrane.io/app": f"{index}" + "x" * 1_000_000})
            obj["spec"]["containers"][0]["env"] = [{"name": "BIG", "value": f"{index}" + "y" * 1_000_000}]
            assert admit(obj, uid=f"uid-{index}")["allowed"] is True
        del obj
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert retained < MIB, f"{retained} bytes kept after 20 admissions of 2 MB pods"


def test_a_bounded_cache_evicts_by_bytes_and_never_stores_an_entry_over_its_bound() -> None:
    cache: caching.BoundedCache[str, str] = caching.BoundedCache(max_entries=10, max_bytes=100, max_entry_bytes=40)
    assert cache.put("a", "A", 40) and cache.put("b", "B", 40)
    assert not cache.put("huge", "H", 41) and cache.get("huge") is None
    assert cache.get("a") == "A"  # now the most recently used
    assert cache.put("c", "C", 40)  # 120 bytes: b, the least recently used, goes
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.bytes == 80 and len(cache) == 2
    assert cache.put("a", "A2", 10) and cache.bytes == 50  # replacing an entry replaces its bytes


# --- defect 5: "internal error" where a denial naming the annotation or field belongs ----------


def test_a_5000_digit_min_ready_seconds_is_a_denial_naming_it() -> None:
    message = denial(pod({keys.MIN_READY_SECONDS: "9" * 5000}))
    assert message.startswith(f'annotation "{keys.MIN_READY_SECONDS}": "999')
    assert "(5000 characters) is not valid: expected a whole number of seconds" in message


@pytest.mark.parametrize(("key", "value"), [("injector.autocrane.io/datadeployer-cpu", "1e999999999"),
                                            ("injector.autocrane.io/datadeployer-memory-limit", "1e-999999999"),
                                            ("injector.autocrane.io/watchdoghealthz-memory", "1" + "0" * 70),
                                            ("injector.autocrane.io/datadeployer-cpu-limit", "9223372036854775808")])
def test_a_quantity_decimal_cannot_hold_is_a_denial_naming_it(key: str, value: str) -> None:
    assert denial(pod({key: value})).startswith(f'annotation "{key}": ')


def test_an_exbibyte_quantity_is_read_as_one_not_as_an_exponent() -> None:
    """Found writing these tests: "1Ei" was taken for an exponent, and int("i") was a 500."""
    result = patched(pod({"injector.autocrane.io/datadeployer-memory-limit": "1Ei"}))
    assert result["spec"]["initContainers"][0]["resources"]["limits"]["memory"] == "1Ei"
    assert denial(pod({"injector.autocrane.io/datadeployer-memory-limit": "8Ei"})).startswith(
        'annotation "injector.autocrane.io/datadeployer-memory-limit": "8Ei" is not valid')


def test_a_10000_level_status_annotation_is_a_denial_naming_it() -> None:
    message = denial(pod({keys.INJECTOR_STATUS: "[" * 10_000 + "]" * 10_000}))
    assert message.startswith(f'annotation "{keys.INJECTOR_STATUS}": "[[[[')
    assert "(20000 characters) is not valid: expected the JSON the injector writes" in message


WRONG_TYPES = [["app"], {"name": "app"}]


@pytest.mark.parametrize("wrong", WRONG_TYPES)
@pytest.mark.parametrize(("spec", "path"), [
    (lambda w: {"containers": [{"name": w}]}, "spec.containers[0].name"),
    (lambda w: {"initContainers": [{"name": w}]}, "spec.initContainers[0].name"),
    (lambda w: {"ephemeralContainers": [{"name": w}]}, "spec.ephemeralContainers[0].name"),
    (lambda w: {"volumes": [{"name": w}]}, "spec.volumes[0].name"),
    (lambda w: {"containers": [{"name": "app", "volumeMounts": [{"name": w, "mountPath": "/x"}]}]},
     "spec.containers[0].volumeMounts[0].name"),
    (lambda w: {"containers": [{"name": "app", "volumeMounts": [{"name": "v", "mountPath": w}]}]},
     "spec.containers[0].volumeMounts[0].mountPath"),
    (lambda w: {"containers": [{"name": "app", "ports": [{"containerPort": w}]}]},
     "spec.containers[0].ports[0].containerPort"),
])
def test_a_field_of_the_wrong_json_type_is_a_denial_naming_it(spec: Any, path: str, wrong: Any) -> None:
    assert denial(pod({keys.MIN_READY_SECONDS: "5"}, **spec(wrong))).startswith(f"{path} is not valid: ")


@pytest.mark.parametrize("port", ["8097", True, 8097.0, 0, 70000])
def test_a_container_port_that_is_not_a_port_number_is_a_denial(port: Any) -> None:
    obj = pod({keys.MIN_READY_SECONDS: "5"}, containers=[{"name": "app", "ports": [{"containerPort": port}]}])
    assert denial(obj) == ("spec.containers[0].ports[0].containerPort is not valid: expected a port number, "
                           "1 to 65535")


@pytest.mark.parametrize(("spec", "path"), [({"containers": [{"name": "app", "ports": {"a": 1}}]},
                                             "spec.containers[0].ports"),
                                            ({"containers": [{"name": "app", "volumeMounts": "x"}]},
                                             "spec.containers[0].volumeMounts"),
                                            ({"volumes": [["v"]]}, "spec.volumes")])
def test_a_list_of_the_wrong_shape_is_a_denial_naming_it(spec: dict[str, Any], path: str) -> None:
    assert denial(pod(**spec)) == f"{path} is not valid: expected a list of mappings"


def test_the_wrong_types_are_refused_when_the_status_would_strip_too() -> None:
    """An opted-out pod with a status is stripped: the same checks run before."""
    obj = pod({keys.INJECT: "false", keys.INJECTOR_STATUS: podstrategies.STATUS},
              volumes=[{"name": ["autocrane-data"]}])
    assert denial(obj).startswith("spec.volumes[0].name is not valid: expected a string, not list")


def test_300_deep_nesting_in_an_init_container_is_a_denial_naming_it() -> None:
    obj = pod(initContainers=[{"name": "init", "env": [{"name": "X", "value": nested(300)}]}])
    assert denial(obj) == ("spec.initContainers[0].env is not valid: expected JSON nested at most 64 levels deep "
                           "(a whole Pod is about 12)")


def test_a_pod_nested_exactly_to_the_depth_limit_is_injected() -> None:
    # pod, spec, containers, container: 4 levels; 60 more make untrusted.MAX_DEPTH.
    at_limit = pod(containers=[{"name": "app", "x": nested(untrusted.MAX_DEPTH - 4)}])
    assert untrusted.depth(at_limit) == untrusted.MAX_DEPTH
    assert len(patched(at_limit)["spec"]["initContainers"]) == 1
    past = pod(containers=[{"name": "app", "x": nested(untrusted.MAX_DEPTH - 3)}])
    assert denial(past).startswith("spec.containers[0].x is not valid: expected JSON nested at most 64")


def test_nesting_orjson_still_decodes_is_a_denial_and_past_that_a_400() -> None:
    """orjson decodes 1,023 levels: the injection refuses them; deeper is not JSON we read (400)."""
    obj = pod(containers=[{"name": "app", "x": RAW}])
    answer = post(with_raw(review(obj), "[" * 1000 + "]" * 1000))
    assert answer.status_code == 200 and answer.json()["response"]["status"]["code"] == 400
    assert answer.json()["response"]["status"]["message"].startswith("spec.containers[0].x is not valid")
    answer = post(with_raw(review(obj), "[" * 100_000 + "]" * 100_000))
    assert answer.status_code == 400 and answer.json()["error"].startswith("body is not JSON")


def test_an_unexpected_exception_is_still_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy's other half: a bug is not dressed up as a denial."""
    def broken(*_: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(inject, "_add", broken)
    admission.CACHE.clear()
    response = admit(pod({"probe.autocrane.io/unique": "a bug"}))
    assert response["allowed"] is False and response["status"]["code"] == 500


# --- defect 7: validators that passed a trailing newline --------------------------------------


def test_a_store_location_with_a_trailing_newline_is_a_denial() -> None:
    assert denial(pod({keys.STORE_LOCATION: "/data\n"})).startswith(
        'annotation "store.autocrane.io/location": "/data\\n" is not valid: expected an absolute path')


def test_a_data_set_name_with_a_trailing_newline_is_a_denial() -> None:
    obj = pod()
    obj["metadata"]["annotations"] = {"data.autocrane.io/models\n": "models/v1"}
    assert denial(obj).startswith('annotation "data.autocrane.io/models\\n": "models/v1" is not valid: '
                                  "expected a key data.autocrane.io/<name> whose name is a DNS-1123 label")


@pytest.mark.parametrize("text", ["1\n", "64Mi\n", "1e3\n"])
def test_a_quantity_with_a_trailing_newline_is_no_quantity(text: str) -> None:
    assert options.parse_quantity(text) is None
    with pytest.raises(errors.ConfigError, match=r"datadeployer_resources\.cpu_limit"):
        settings.load(None, {"datadeployer_resources": {"limits": {"cpu": text}}})


def test_a_dns_label_with_a_trailing_newline_is_no_label() -> None:
    assert datasets.is_dns1123_label("models") and not datasets.is_dns1123_label("models\n")


def test_a_quantity_annotation_is_used_without_the_spaces_around_it() -> None:
    """Surrounding whitespace is trimmed (as before), so nothing with a newline reaches the pod."""
    result = patched(pod({"injector.autocrane.io/datadeployer-cpu": " 100m\n"}))
    assert result["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] == "100m"


# --- defect 8: the status annotation deleted the user's containers ----------------------------

HAND_WRITTEN = json.dumps({"containers": ["app"], "initContainers": ["init"], "volumes": ["cache"],
                           "version": "0.1.0", "config": "x"})


def test_a_hand_written_status_naming_the_app_does_not_remove_it() -> None:
    obj = pod({keys.INJECTOR_STATUS: HAND_WRITTEN}, initContainers=[{"name": "init", "image": "i"}],
              volumes=[{"name": "cache", "emptyDir": {}}])
    obj["spec"]["containers"][0]["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    result = patched(obj)
    assert [c["name"] for c in result["spec"]["containers"]] == ["app", containers.DATADEPLOYER]
    assert [c["name"] for c in result["spec"]["initContainers"]] == [containers.DATADEPLOYER_INIT, "init"]
    assert "cache" in [v["name"] for v in result["spec"]["volumes"]]
    assert {"name": "cache", "mountPath": "/cache"} in result["spec"]["containers"][0]["volumeMounts"]


def test_an_opted_out_pod_with_such_a_status_keeps_its_containers() -> None:
    obj = pod({keys.INJECTOR_STATUS: HAND_WRITTEN, keys.INJECT: "false"})
    result = patched(obj)
    assert result["spec"]["containers"] == obj["spec"]["containers"]
    assert keys.INJECTOR_STATUS not in result["metadata"]["annotations"]


def test_a_real_previous_injection_is_still_stripped() -> None:
    injected = inject.inject(pod(), INJECTOR).pod
    injected["metadata"]["annotations"][keys.INJECT] = "false"
    result = patched(injected)
    assert [c["name"] for c in result["spec"]["containers"]] == ["app"]
    assert "initContainers" not in result["spec"] and "volumes" not in result["spec"]


# --- defect 11: responses without a size bound ------------------------------------------------


def test_100000_unknown_annotations_give_ten_warnings_and_a_count() -> None:
    many = {f"x.autocrane.io/k{i}": "v" for i in range(100_000)}
    answer = CLIENT.post("/mutate", content=json.dumps(review(pod(many))), headers={"content-type": "application/json"})
    assert answer.status_code == 200 and len(answer.content) < 10_000
    warnings = answer.json()["response"]["warnings"]
    assert len(warnings) == inject.MAX_WARNINGS + 1
    assert warnings[-1] == "and 99990 more warnings like these"


def test_a_1_mib_value_is_echoed_cut_in_the_denial() -> None:
    answer = CLIENT.post("/mutate", content=json.dumps(review(pod({keys.STORE_LOCATION: "x" * MIB}))),
                         headers={"content-type": "application/json"})
    assert len(answer.content) < 1000
    message = answer.json()["response"]["status"]["message"]
    assert message.startswith(f'annotation "store.autocrane.io/location": "{"x" * untrusted.SHOWN}"... '
                              f"({MIB} characters) is not valid")


def test_a_1_mib_key_is_echoed_cut_in_its_warning_and_its_denial() -> None:
    key = "x.autocrane.io/" + "k" * MIB
    (warning,) = admit(pod({key: "v"}))["warnings"]
    assert len(warning) < 500 and f"({len(key)} characters)" in warning
    data_key = "data.autocrane.io/" + "k" * MIB
    assert len(denial({"metadata": {"annotations": {data_key: "v"}}, "spec": pod()["spec"]})) < 600


def test_a_1_mib_container_name_is_echoed_cut_in_a_conflict() -> None:
    obj = pod(containers=[{"name": "n" * MIB, "image": "a",
                           "volumeMounts": [{"name": "v", "mountPath": "/autocrane/data"}]}])
    message = denial(obj)
    assert len(message) < 600 and f"({MIB} characters) mounts volume" in message


@pytest.mark.parametrize("uid", ["u" * (admission.MAX_UID_CHARS + 1), "u" * MIB])
def test_a_uid_longer_than_any_api_server_sends_is_a_400(uid: str) -> None:
    answer = CLIENT.post("/mutate", content=json.dumps(review(pod(), uid=uid)),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 400 and len(answer.content) < 300


def test_a_huge_or_deep_api_version_is_a_short_400() -> None:
    for raw in (json.dumps("v" * MIB), "[" * 1000 + "]" * 1000):
        answer = post(with_raw({**review(pod()), "apiVersion": RAW}, raw))
        assert answer.status_code == 400 and len(answer.content) < 400, answer.text[:400]


def test_the_log_line_cuts_what_it_repeats_from_the_review(caplog: pytest.LogCaptureFixture) -> None:
    body = review(pod())
    body["request"]["namespace"] = "n" * MIB
    body["request"]["name"] = RAW
    with caplog.at_level("INFO", logger="webhook.server"):
        post(with_raw(body, "[" * 1000 + "]" * 1000))
    line = next(r for r in caplog.records if r.getMessage() == "admission")
    assert len(line.__dict__["namespace"]) == 253 and line.__dict__["pod"] == "p"


# --- properties ---------------------------------------------------------------------------------

ENVELOPES = st.fixed_dictionaries({
    "apiVersion": podstrategies.sometimes_any(st.just("admission.k8s.io/v1")),
    "kind": podstrategies.sometimes_any(st.just("AdmissionReview")),
    "request": podstrategies.sometimes_any(st.fixed_dictionaries({
        "uid": podstrategies.sometimes_any(st.just("uid-1")),
        "kind": podstrategies.sometimes_any(st.just({"group": "", "version": "v1", "kind": "Pod"})),
        "operation": podstrategies.sometimes_any(st.just("CREATE")),
        "object": podstrategies.sometimes_any(podstrategies.pods())}))})


def assert_answered(answer: Any) -> None:
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text[:300]
    if answer.status_code == 200:
        response = answer.json()["response"]
        assert isinstance(response["allowed"], bool)
        if not response["allowed"]:
            assert response["status"]["code"] == 400, response
        assert len(response.get("warnings", ())) <= inject.MAX_WARNINGS + 1


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(podstrategies.pods())
def test_any_pod_is_allowed_or_denied_never_an_internal_error(obj: dict[str, Any]) -> None:
    assert_answered(CLIENT.post("/mutate", content=json.dumps(review(obj)),
                                headers={"content-type": "application/json"}))


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENVELOPES)
def test_any_admission_review_is_answered_with_a_200_or_a_4xx(body: dict[str, Any]) -> None:
    assert_answered(CLIENT.post("/mutate", content=json.dumps(body), headers={"content-type": "application/json"}))


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_is_answered_with_a_200_or_a_4xx(body: bytes) -> None:
    assert_answered(CLIENT.post("/mutate", content=body, headers={"content-type": "application/json"}))


# --- the bounds of docs/injector.md "Limits" not covered above ------------------------------------


def test_a_status_up_to_4096_bytes_is_read_and_a_longer_or_deeper_one_is_not() -> None:
    def status(padding: str, volumes: Any = ("autocrane-data",)) -> str:
        return json.dumps({"containers": [], "initContainers": [], "volumes": list(volumes), "version": padding,
                           "config": "c"})

    longest = status("v" * (options.MAX_STATUS_BYTES - len(status(""))))
    assert len(longest) == options.MAX_STATUS_BYTES
    assert options.parse_status(longest).version.startswith("vvv")
    for refused in (status("v" * (options.MAX_STATUS_BYTES - len(status("")) + 1)), status("", [["deep"]])):
        with pytest.raises(errors.AnnotationError, match="expected the JSON the injector writes"):
            options.parse_status(refused)


@pytest.mark.parametrize(("text", "accepted"), [
    ("0." + "0" * 61 + "1", True), ("0." + "0" * 62 + "1", False),  # 64 and 65 characters
    ("1e-30", True), ("1e-31", False), ("9223372036854775807", True), ("9223372036854775808", False),
    ("8Ei", False), ("7Ei", True)])
def test_quantities_are_bounded_in_length_exponent_and_size(text: str, accepted: bool) -> None:
    assert (options.parse_quantity(text) is not None) is accepted


def test_min_ready_seconds_is_bounded_by_kubernetes_int32() -> None:
    assert inpod.parse_min_ready_seconds(str(2**31 - 1)) == 2**31 - 1
    for text in (str(2**31), "0" * 11 + "1"):
        with pytest.raises(errors.AnnotationError):
            inpod.parse_min_ready_seconds(text)


def test_a_key_is_quoted_whole_up_to_the_longest_valid_annotation_key_and_cut_past_it() -> None:
    longest = "a" * 253 + "/" + "b" * 63
    assert len(longest) == errors.KEY_SHOWN
    assert f'"{longest}"' in str(errors.AnnotationError(longest, "v", "x"))
    assert f'"{longest}a"' not in str(errors.AnnotationError(longest + "a", "v", "x"))
    assert f"({errors.KEY_SHOWN + 1} characters)" in str(errors.AnnotationError(longest + "a", "v", "x"))
