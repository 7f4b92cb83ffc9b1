"""Properties of the injector over generated pods (hypothesis, >= 1,000 examples).

For every generated pod, either the injector refuses it (errors.AnnotationError, and the webhook denies with
400), or: the admission patch applies with ``jsonpatch`` and gives exactly the injected pod; the result
is valid (unique container and volume names, every mount names a volume); every app container of a
data pod mounts the data read-only; and injecting again changes nothing.

The generator mixes what trips injectors: no metadata or no annotations map, missing or empty
``initContainers``/``volumes``/``volumeMounts``, user objects with our names, mounts at and around the
store location, our ports, annotation keys with ``/`` and ``~``, ``managedFields``, Jobs' restart
policies, native and classic modes, both init positions.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from autocrane import errors, keys
from tests.webhook import podchecks
from webhook import admission, containers, inject, policy, settings

SETTINGS_VARIANTS = (
    settings.load(),
    settings.load(overrides={"native_sidecar": True}),
    settings.load(overrides={"store_location": "/srv/data", "watchdoghealthz_port": 9000}),
)
CONTAINER_NAMES = ["app", "web", "worker", "proxy", "db", "init-a", "init-b", "x"]
VOLUME_NAMES = ["cache", "config", "logs", "scratch", "certs", "tmp"]
MOUNT_PATHS = ["/cache", "/etc/config", "/var/log", "/tmp", "/var/lib/app", "/autocrane/database", "/home/x"]
PORTS = [80, 443, 8080, 9090]
# Added to the pools of one pod in five, to exercise the conflict checks: our names, paths that overlap
# the store locations used below, and the ports our containers listen on.
CLASHING_CONTAINER_NAMES = [containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ]
CLASHING_VOLUME_NAMES = [containers.PODINFO_VOLUME, containers.DATA_VOLUME]
CLASHING_MOUNT_PATHS = ["/autocrane", "/srv/data/sub", "/autocrane/data", "/data", "/opt/app"]
CLASHING_PORTS = [8097, 8098, 9000]


def rarely(probability: float) -> st.SearchStrategy[bool]:
    """True with about this probability (hypothesis favours the ends of integer ranges, so aim mid-range)."""
    return st.integers(0, 999).map(lambda n: 300 <= n < 300 + probability * 1000)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    clash = draw(rarely(0.2))
    container_pool = CONTAINER_NAMES + (CLASHING_CONTAINER_NAMES if clash else [])
    volume_pool = VOLUME_NAMES + (CLASHING_VOLUME_NAMES if clash else [])
    path_pool = MOUNT_PATHS + (CLASHING_MOUNT_PATHS if clash else [])
    port_pool = PORTS + (CLASHING_PORTS if clash else [])
    volume_names = draw(st.lists(st.sampled_from(volume_pool), unique=True, max_size=4))
    names = draw(st.lists(st.sampled_from(container_pool), unique=True, min_size=1, max_size=5))
    split = draw(st.integers(min_value=0, max_value=len(names) - 1))
    init_names, app_names = names[:split], names[split:]

    def container(name: str) -> dict[str, Any]:
        found: dict[str, Any] = {"name": name, "image": f"{name}:1"}
        if volume_names and draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(volume_names), unique=True, max_size=3))
            paths = draw(st.lists(st.sampled_from(path_pool), unique=True, min_size=len(chosen),
                                  max_size=len(chosen)))
            found["volumeMounts"] = [{"name": v, "mountPath": p, **({"readOnly": True} if i % 2 else {})}
                                     for i, (v, p) in enumerate(zip(chosen, paths, strict=True))]
        elif draw(st.booleans()):
            found["volumeMounts"] = []
        if draw(rarely(0.2)):
            found["ports"] = [{"containerPort": draw(st.sampled_from(port_pool)), "protocol": "TCP"}]
        return found

    spec: dict[str, Any] = {"containers": [container(n) for n in app_names]}
    if init_names or draw(st.booleans()):
        spec["initContainers"] = [container(n) for n in init_names]
    if volume_names or draw(st.booleans()):
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volume_names]
    restart = draw(st.sampled_from([None, None, "Always", "Never", "OnFailure"]))
    if restart:
        spec["restartPolicy"] = restart
    if draw(rarely(0.03)):
        spec["hostNetwork"] = True

    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": spec}
    shape = draw(st.sampled_from([*["annotated"] * 8, "bare", "none"]))
    if shape != "none":
        pod["metadata"] = {"name": "p", "namespace": "ns"}
        if draw(rarely(0.2)):
            pod["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
    if shape == "annotated":
        pod["metadata"]["annotations"] = draw(autocrane_annotations())
    return pod


@st.composite
def autocrane_annotations(draw: st.DrawFn) -> dict[str, str]:
    notes: dict[str, str] = {}
    wants = draw(st.sampled_from(["both", "data", "readiness", "data", "both", "neither"]))
    if wants in ("data", "both"):
        for name in draw(st.lists(st.sampled_from(["models", "prices", "rules", "a-1"]), unique=True, min_size=1,
                                  max_size=3)):
            notes[f"{keys.DATA_PREFIX}{name}"] = draw(st.sampled_from(["repo/x", "s3://bucket/y", "v~1/z"]))
    if wants in ("readiness", "both"):
        notes[keys.MIN_READY_SECONDS] = str(draw(st.integers(0, 600)))
    optional = {
        keys.STORE_LOCATION: st.sampled_from(["/autocrane/data", "/srv/data", "/data/", "/opt/app/data"]),
        keys.NATIVE_SIDECAR: st.sampled_from(["true", "false"]),
        keys.INIT_POSITION: st.sampled_from(["first", "last"]),
        keys.INJECT: st.sampled_from(["true", "true", "false"]),
        "injector.autocrane.io/datadeployer-memory": st.sampled_from(["32Mi", "1Gi"]),
        "injector.autocrane.io/watchdoghealthz-cpu-limit": st.sampled_from(["5m", "2"]),
        "injector.autocrane.io/unknown": st.just("warned"),
        "team.example.com/owner~name": st.just("keys with / and ~ need escaping"),
        "app": st.just("web"),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=5)):
        notes[key] = draw(optional[key])
    return notes


def review_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "CREATE", "object": pod}}


@hypothesis_settings(max_examples=1000, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pod=pods(), variant=st.integers(0, len(SETTINGS_VARIANTS) - 1))
def test_patches_apply_results_are_valid_and_injection_is_idempotent(pod: dict[str, Any], variant: int) -> None:
    s = SETTINGS_VARIANTS[variant]
    pristine = copy.deepcopy(pod)
    answer = admission.review(review_of(pod), s)["response"]
    try:
        result = inject.inject(pod, s)
    except errors.AnnotationError as exc:
        event("refused")
        assert answer["allowed"] is False and answer["status"] == {"code": 400, "message": str(exc)}
        return
    event(f"skipped: {result.skipped_reason}" if result.skipped_reason else "injected")
    assert answer["allowed"] is True

    patch = admission.admission_patch(pod, result.pod)
    assert jsonpatch.apply_patch(pod, patch) == result.pod
    if "patch" in answer:
        sent = json.loads(base64.b64decode(answer["patch"]))
        assert answer["patchType"] == "JSONPatch" and jsonpatch.apply_patch(pod, sent) == result.pod
    else:
        assert result.pod == pod

    podchecks.assert_valid_pod(result.pod)
    again = inject.inject(result.pod, s)
    assert again.pod == result.pod
    assert pod == pristine, "inject and review must never change their input"
    assert "patch" not in admission.review(review_of(result.pod), s)["response"]

    if result.skipped_reason is None:
        injected = podchecks.injected_containers(result.pod)
        assert injected
        for container in injected:
            podchecks.assert_restricted(container)
            podchecks.assert_resources_set(container)
        if any(k.startswith(keys.DATA_PREFIX) for k in pod["metadata"]["annotations"]):
            for app in podchecks.app_containers(result.pod):
                data_mounts = [m for m in app["volumeMounts"] if m["name"] == containers.DATA_VOLUME]
                assert len(data_mounts) == 1 and data_mounts[0]["readOnly"] is True
        assert again.skipped_reason == policy.ALREADY_INJECTED
