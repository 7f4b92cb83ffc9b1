"""inject(pod, settings): what is added where, idempotency, conflicts, and the promises on every injected container."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from autocrane import errors, keys
from tests.webhook import podchecks
from webhook import containers, inject, policy, settings

SETTINGS = settings.load()
DATA = {"data.autocrane.io/models": "repo/models"}
READY = {keys.MIN_READY_SECONDS: "30"}


def pod(notes: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
                             "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec}}
    if notes is not None:
        found["metadata"]["annotations"] = dict(notes)
    return found


def names(items: list[dict[str, Any]] | None) -> list[str]:
    return [item["name"] for item in items or []]


def test_a_pod_without_annotations_is_left_alone() -> None:
    original = pod()
    result = inject.inject(original, SETTINGS)
    assert result.pod == original and result.skipped_reason == policy.NOT_OPTED_IN


def test_a_pod_without_metadata_or_spec_is_left_alone() -> None:
    for bare in ({}, {"kind": "Pod"}, {"metadata": None}):
        assert inject.inject(bare, SETTINGS).pod == bare


def test_other_kinds_are_not_pods() -> None:
    service = {"kind": "Service", "metadata": {"annotations": DATA}}
    result = inject.inject(service, SETTINGS)
    assert result.pod == service and result.skipped_reason == policy.NOT_A_POD


def test_a_data_pod_gets_an_init_container_a_sidecar_and_volumes_even_without_the_arrays() -> None:
    result = inject.inject(pod(DATA), SETTINGS)
    spec = result.pod["spec"]
    assert result.skipped_reason is None and result.warnings == ()
    assert names(spec["initContainers"]) == [containers.DATADEPLOYER_INIT]
    assert names(spec["containers"]) == ["app", containers.DATADEPLOYER]
    assert names(spec["volumes"]) == list(containers.VOLUME_NAMES)
    flags = ["--repository", SETTINGS.data_repository_url, "--root", SETTINGS.store_location,
             "--annotations-file", "/etc/autocrane/podinfo/annotations"]
    assert spec["initContainers"][0]["command"] == ["autocrane", "datadeployer", "--mode", "init", *flags]
    assert spec["containers"][1]["command"] == ["autocrane", "datadeployer", "--mode", "sidecar", *flags,
                                                "--port", "8098"]
    assert spec["volumes"][0] == {"name": "autocrane-data", "emptyDir": {"sizeLimit": SETTINGS.data_size_limit}}
    podchecks.assert_valid_pod(result.pod)


def test_the_input_pod_is_never_modified() -> None:
    original = pod(DATA, initContainers=[{"name": "migrate", "image": "m"}])
    kept = copy.deepcopy(original)
    inject.inject(original, SETTINGS)
    assert original == kept


def test_every_app_container_mounts_the_data_read_only_at_the_store_location() -> None:
    spec = {"containers": [{"name": "a", "image": "a"},
                           {"name": "b", "image": "b", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
            "volumes": [{"name": "cache", "emptyDir": {}}]}
    result = inject.inject(pod({**DATA, keys.STORE_LOCATION: "/srv/data/"}, **spec), SETTINGS)
    apps = podchecks.app_containers(result.pod)
    assert names(apps) == ["a", "b"]
    for app in apps:
        assert app["volumeMounts"][-1] == {"name": "autocrane-data", "mountPath": "/srv/data", "readOnly": True}
    assert apps[1]["volumeMounts"][0] == {"name": "cache", "mountPath": "/cache"}
    for deployer in podchecks.injected_containers(result.pod):
        assert {"name": "autocrane-data", "mountPath": "/srv/data"} in deployer["volumeMounts"]  # read-write
        assert deployer["command"][deployer["command"].index("--root") + 1] == "/srv/data"


def test_the_settings_default_store_location_applies_without_the_annotation() -> None:
    custom = settings.load(overrides={"store_location": "/var/lib/data"})
    result = inject.inject(pod(DATA), custom)
    assert podchecks.app_containers(result.pod)[0]["volumeMounts"][0]["mountPath"] == "/var/lib/data"


def test_every_injected_container_passes_pod_security_restricted_and_sets_resources() -> None:
    for notes in (DATA, READY, {**DATA, **READY}, {**DATA, **READY, keys.NATIVE_SIDECAR: "true"}):
        injected = podchecks.injected_containers(inject.inject(pod(notes), SETTINGS).pod)
        assert injected
        for container in injected:
            podchecks.assert_restricted(container)
            podchecks.assert_resources_set(container)
            assert container["imagePullPolicy"] == SETTINGS.image_pull_policy


def test_injected_containers_know_their_pod_through_the_downward_api() -> None:
    result = inject.inject(pod({**DATA, **READY}), SETTINGS)
    for container in podchecks.injected_containers(result.pod):
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/etc/autocrane/podinfo"] == {"name": "autocrane-podinfo",
                                                    "mountPath": "/etc/autocrane/podinfo", "readOnly": True}
        assert mounts["/tmp"]["name"] == "autocrane-tmp"
    podinfo = next(v for v in result.pod["spec"]["volumes"] if v["name"] == "autocrane-podinfo")
    assert {"path": "annotations", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"}} \
        in podinfo["downwardAPI"]["items"]


def test_watchdoghealthz_only_pods_get_the_readiness_sidecar_and_no_data_volume() -> None:
    result = inject.inject(pod(READY), SETTINGS)
    spec = result.pod["spec"]
    assert "initContainers" not in spec
    assert names(spec["containers"]) == ["app", containers.WATCHDOGHEALTHZ]
    assert names(spec["volumes"]) == ["autocrane-podinfo", "autocrane-tmp"]
    sidecar = spec["containers"][1]
    assert sidecar["command"] == ["autocrane", "watchdoghealthz", "--annotations-file",
                                  "/etc/autocrane/podinfo/annotations", "--port", "8097"]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8097, "scheme": "HTTP"}
    assert "volumeMounts" not in spec["containers"][0]


def test_existing_init_containers_run_after_ours_by_default_and_see_the_data() -> None:
    result = inject.inject(pod(DATA, initContainers=[{"name": "migrate", "image": "m"}]), SETTINGS)
    init = result.pod["spec"]["initContainers"]
    assert names(init) == [containers.DATADEPLOYER_INIT, "migrate"]
    assert init[1]["volumeMounts"] == [containers.app_data_mount(SETTINGS.store_location)]


def test_init_position_last_puts_ours_after_the_pods_own_which_get_no_data_mount() -> None:
    notes = {**DATA, keys.INIT_POSITION: "last"}
    result = inject.inject(pod(notes, initContainers=[{"name": "migrate", "image": "m"}]), SETTINGS)
    init = result.pod["spec"]["initContainers"]
    assert names(init) == ["migrate", containers.DATADEPLOYER_INIT]
    assert "volumeMounts" not in init[0]


def test_native_mode_makes_one_restartable_init_container_with_a_startup_probe() -> None:
    result = inject.inject(pod({**DATA, **READY, keys.NATIVE_SIDECAR: "true"},
                               initContainers=[{"name": "migrate", "image": "m"}]), SETTINGS)
    spec = result.pod["spec"]
    assert names(spec["initContainers"]) == [containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ, "migrate"]
    assert names(spec["containers"]) == ["app"]
    deployer, healthz = spec["initContainers"][:2]
    assert deployer["restartPolicy"] == healthz["restartPolicy"] == "Always"
    assert deployer["command"][:4] == ["autocrane", "datadeployer", "--mode", "sidecar"]
    assert deployer["startupProbe"]["httpGet"] == {"path": "/synced", "port": 8098, "scheme": "HTTP"}
    probe = deployer["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= SETTINGS.startup_timeout_seconds
    assert healthz["readinessProbe"]["httpGet"]["path"] == "/healthz" and "startupProbe" not in healthz
    podchecks.assert_valid_pod(result.pod)


def test_native_mode_can_be_the_default_and_a_pod_can_opt_out_of_it() -> None:
    native = settings.load(overrides={"native_sidecar": "true"})
    assert names(inject.inject(pod(DATA), native).pod["spec"]["initContainers"]) == [containers.DATADEPLOYER]
    classic = inject.inject(pod({**DATA, keys.NATIVE_SIDECAR: "false"}), native).pod
    assert names(classic["spec"]["initContainers"]) == [containers.DATADEPLOYER_INIT]


def test_pods_meant_to_finish_get_native_sidecars_so_they_can_complete() -> None:
    result = inject.inject(pod(DATA, restartPolicy="Never"), SETTINGS)
    assert result.pod["spec"]["initContainers"][0].get("restartPolicy") == "Always"
    forced = inject.inject(pod({**DATA, keys.NATIVE_SIDECAR: "false"}, restartPolicy="OnFailure"), SETTINGS)
    assert names(forced.pod["spec"]["containers"]) == ["app", containers.DATADEPLOYER]
    assert len(forced.warnings) == 1 and "never completes" in forced.warnings[0]


def test_the_status_annotation_records_what_was_injected() -> None:
    result = inject.inject(pod({**DATA, **READY}), SETTINGS)
    status = json.loads(result.pod["metadata"]["annotations"][keys.INJECTOR_STATUS])
    assert status["initContainers"] == [containers.DATADEPLOYER_INIT]
    assert status["containers"] == [containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ]
    assert status["volumes"] == list(containers.VOLUME_NAMES)
    assert status["config"] == SETTINGS.config_hash() and status["version"]


@pytest.mark.parametrize("notes", [DATA, READY, {**DATA, **READY, keys.NATIVE_SIDECAR: "true"},
                                   {**DATA, keys.INIT_POSITION: "last"}])
def test_injecting_an_injected_pod_changes_nothing(notes: dict[str, str]) -> None:
    once = inject.inject(pod(notes, initContainers=[{"name": "migrate", "image": "m"}]), SETTINGS)
    twice = inject.inject(once.pod, SETTINGS)
    assert twice.pod == once.pod and twice.skipped_reason == policy.ALREADY_INJECTED


def test_a_new_configuration_replaces_the_previous_injection_without_duplicates() -> None:
    once = inject.inject(pod({**DATA, **READY}), SETTINGS).pod
    newer = settings.load(overrides={"datadeployer_image": "registry.example/sidecar:2", "native_sidecar": True})
    again = inject.inject(once, newer)
    assert again.skipped_reason is None
    assert again.pod == inject.inject(pod({**DATA, **READY}), newer).pod
    podchecks.assert_valid_pod(again.pod)


def test_a_container_added_after_injection_gets_the_data_on_reinvocation() -> None:
    injected = inject.inject(pod(DATA), SETTINGS).pod
    injected["spec"]["containers"].append({"name": "added-by-another-webhook", "image": "x"})
    again = inject.inject(injected, SETTINGS).pod
    added = next(c for c in again["spec"]["containers"] if c["name"] == "added-by-another-webhook")
    assert added["volumeMounts"] == [containers.app_data_mount(SETTINGS.store_location)]
    podchecks.assert_valid_pod(again)


def test_opting_out_or_dropping_the_opt_in_strips_a_previous_injection() -> None:
    original = pod(DATA)
    injected = inject.inject(original, SETTINGS).pod
    injected["metadata"]["annotations"][keys.INJECT] = "false"
    out = inject.inject(injected, SETTINGS)
    assert out.skipped_reason == policy.OPTED_OUT
    assert out.pod == pod({**DATA, keys.INJECT: "false"})
    del injected["metadata"]["annotations"]["data.autocrane.io/models"]
    del injected["metadata"]["annotations"][keys.INJECT]
    assert inject.inject(injected, SETTINGS).pod == pod()


def test_host_network_pods_that_opt_in_are_refused() -> None:
    with pytest.raises(errors.AnnotationError) as caught:
        inject.inject(pod(DATA, hostNetwork=True), SETTINGS)
    assert str(caught.value).startswith('annotation "data.autocrane.io/models": "repo/models" is not valid')
    assert "hostNetwork" in str(caught.value)


def test_mirror_pods_are_skipped() -> None:
    result = inject.inject(pod({**DATA, "kubernetes.io/config.mirror": "abc"}), SETTINGS)
    assert result.skipped_reason == policy.MIRROR_POD


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"containers": [{"name": "autocrane-datadeployer", "image": "x"}]}, 'container named "autocrane-datadeployer"'),
    ({"initContainers": [{"name": "autocrane-datadeployer-init", "image": "x"}]},
     'container named "autocrane-datadeployer-init"'),
    ({"volumes": [{"name": "autocrane-podinfo", "emptyDir": {}}]}, 'volume named "autocrane-podinfo"'),
    ({"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8098}]}]}, "port 8098"),
])
def test_name_and_port_collisions_with_the_pods_own_objects_are_refused(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(errors.AnnotationError) as caught:
        inject.inject(pod(DATA, **spec), SETTINGS)
    assert str(caught.value).startswith('annotation "data.autocrane.io/models"') and fragment in str(caught.value)


def test_a_name_we_would_not_inject_is_no_collision() -> None:
    spec = {"containers": [{"name": "app", "image": "x"}, {"name": "autocrane-watchdoghealthz", "image": "y"}]}
    assert inject.inject(pod(DATA, **spec), SETTINGS).skipped_reason is None


@pytest.mark.parametrize("path", ["/autocrane/data", "/autocrane/data/", "/autocrane", "/autocrane/data/models"])
def test_a_store_location_overlapping_an_app_mount_is_refused(path: str) -> None:
    spec = {"containers": [{"name": "app", "image": "x", "volumeMounts": [{"name": "v", "mountPath": path}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]}
    with pytest.raises(errors.AnnotationError) as caught:
        inject.inject(pod(DATA, **spec), SETTINGS)
    assert str(caught.value).startswith('annotation "store.autocrane.io/location": "/autocrane/data" is not valid: '
                                        "expected a path clear of the pod's own mounts")
    assert 'container "app" mounts volume "v"' in str(caught.value)


def test_a_mount_beside_the_store_location_is_fine() -> None:
    spec = {"containers": [{"name": "app", "image": "x",
                            "volumeMounts": [{"name": "v", "mountPath": "/autocrane/database"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}]}
    podchecks.assert_valid_pod(inject.inject(pod(DATA, **spec), SETTINGS).pod)


def test_resource_overrides_apply_and_keep_requests_within_limits() -> None:
    result = inject.inject(pod({**DATA, "injector.autocrane.io/datadeployer-memory": "1Gi",
                                "injector.autocrane.io/datadeployer-cpu-limit": "10m"}), SETTINGS)
    for container in podchecks.injected_containers(result.pod):
        assert container["resources"] == {"requests": {"cpu": "10m", "memory": "1Gi"},
                                          "limits": {"cpu": "10m", "memory": "1Gi"}}


def test_unknown_annotations_come_back_as_warnings() -> None:
    result = inject.inject(pod({**DATA, "injector.autocrane.io/nativ-sidecar": "true"}), SETTINGS)
    assert result.skipped_reason is None
    assert result.warnings == ('unknown annotation "injector.autocrane.io/nativ-sidecar" is ignored '
                               "(see docs/injector.md for the known keys)",)


def test_objects_not_shaped_like_pods_raise_object_errors() -> None:
    for bad, path in (({"metadata": {"annotations": DATA}, "spec": {"containers": "app"}}, "spec.containers"),
                      ({"metadata": {"annotations": DATA}, "spec": []}, "spec"),
                      ({"metadata": {"annotations": ["x"]}}, "metadata.annotations"),
                      ({"metadata": {"annotations": DATA}, "spec": {"containers": []}}, "spec.containers"),
                      ({"metadata": {"annotations": DATA}}, "spec.containers")):
        with pytest.raises(errors.ObjectError) as caught:
            inject.inject(bad, SETTINGS)
        assert str(caught.value).startswith(path)
