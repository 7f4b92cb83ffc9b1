"""Hypothesis strategies for hostile pods: the known keys with values of any form, fields of any JSON type.

Shared by the webhook's and ``autocrane inject -f``'s property tests. The pods are close enough to
real ones that the injector gets past its first checks (annotations that opt in, containers with
names), and anything may be replaced by any JSON value, so every check after those runs too.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from autocrane import keys

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)

OPT_IN_KEYS = ["data.autocrane.io/models", keys.MIN_READY_SECONDS]
KEYS = [*OPT_IN_KEYS, "data.autocrane.io/Models", "data.autocrane.io/models\n", "data.autocrane.io/",
        keys.STORE_LOCATION, keys.STORE_DEPS, keys.INJECT, keys.NATIVE_SIDECAR,
        keys.INIT_POSITION, keys.INJECTOR_STATUS, keys.EVICTION_OPT_OUT,
        *(keys.resource_key(p, f) for p in keys.INJECTED_CONTAINERS for f in keys.RESOURCE_FIELDS),
        "probe.autocrane.io/app", "status.autocrane.io/app", "request.data.autocrane.io/models",
        "injector.autocrane.io/native-sidecars", "x.autocrane.io/k", "autocrane.io/", "example.com/other"]
STATUS = '{"config":"c","containers":["app"],"initContainers":["init"],"version":"v","volumes":["data"]}'
TRICKY_VALUES = ["true", "false", "first", "last", "30", "0", "-1", "9" * 5000, "1e999999999", "1e-999999999",
                 "100m", "64Mi", "1\n", "/data", "/data\n", "/proc", "/", "relative", "models/v1", "", " ",
                 STATUS, "[" * 10_000 + "]" * 10_000, '{"containers": 1}', "x" * 2000]


def sometimes_any(strategy: st.SearchStrategy[Any], one_in: int = 8) -> st.SearchStrategy[Any]:
    """``strategy``, or about once in ``one_in`` draws any JSON value in its place."""
    return st.integers(1, one_in).flatmap(lambda n: JSON_VALUES if n == 1 else strategy)


ANNOTATION_VALUES = sometimes_any(st.sampled_from(TRICKY_VALUES) | st.text(max_size=40))


NAMES = st.sampled_from(["app", "web", "init", "data", "autocrane-datadeployer", "autocrane-data",
                         "autocrane-podinfo"])
PORTS = sometimes_any(st.lists(st.fixed_dictionaries({"containerPort": sometimes_any(
    st.sampled_from([80, 8097, 8098, 0, 65536]))}), max_size=2))
MOUNTS = sometimes_any(st.lists(st.fixed_dictionaries({"name": sometimes_any(NAMES), "mountPath": sometimes_any(
    st.sampled_from(["/autocrane/data", "/autocrane", "/data", "/cache", "relative"]))}), max_size=2))
CONTAINERS = st.lists(sometimes_any(st.fixed_dictionaries(
    {"name": sometimes_any(NAMES)}, optional={"ports": PORTS, "volumeMounts": MOUNTS, "env": JSON_VALUES,
                                              "restartPolicy": sometimes_any(st.just("Always"))})),
    min_size=1, max_size=3)
VOLUMES = sometimes_any(st.lists(sometimes_any(st.fixed_dictionaries(
    {"name": sometimes_any(NAMES)}, optional={"emptyDir": st.just({})})), max_size=3))
SPECS = sometimes_any(st.fixed_dictionaries(
    {"containers": sometimes_any(CONTAINERS)},
    optional={"initContainers": sometimes_any(CONTAINERS), "ephemeralContainers": CONTAINERS, "volumes": VOLUMES,
              "hostNetwork": sometimes_any(st.booleans()),
              "restartPolicy": sometimes_any(st.sampled_from(["Always", "Never", "OnFailure"]))}))


@st.composite
def pod_annotations(draw: st.DrawFn) -> dict[str, Any]:
    """An opt-in annotation (most of the time) and a few more of the known keys, any values."""
    found: dict[str, Any] = draw(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=30), ANNOTATION_VALUES,
                                                 max_size=3))
    for key, good in zip(OPT_IN_KEYS, ("models/v1", "30"), strict=True):
        if draw(st.integers(0, 2)) > 0:
            found[key] = draw(sometimes_any(st.just(good), 6))
    return found


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    """A Pod whose annotations, metadata, spec or any part of them may be hostile."""
    metadata = draw(sometimes_any(st.fixed_dictionaries({"name": st.just("p"),
                                                         "annotations": sometimes_any(pod_annotations(), 20)}), 20))
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": draw(SPECS)}
    return pod
