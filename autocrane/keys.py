"""Every ``autocrane.io`` annotation and label key, and prefix, spelled once (pure, constants only).

This is the public contract between users, the injector, the controller and the sidecars. What a
value means and how it is parsed lives with its readers: the injector's options in
``webhook.options``, data-set declarations in :mod:`autocrane.datasets`, watchdog statuses in
:mod:`autocrane.watchdogs`, data requests in :mod:`autocrane.manifests`, the datadeployer's
acknowledgement mirror in :mod:`autocrane.inpod`, staged rollouts in :mod:`autocrane.approllouts`.

Families (``<name>`` is free, the rest is fixed):

======================================================  =====================================
key                                                     written by
======================================================  =====================================
``data.autocrane.io/<name>: <source>``                  user (opts into the datadeployer)
``store.autocrane.io/location: <absolute path>``        user
``store.autocrane.io/deps: <source>, ...``              user (rollout dependents)
``watchdoghealthz.autocrane.io/min-ready-seconds: <n>``  user (opts into watchdoghealthz)
``injector.autocrane.io/<override>``                    user (per-pod injector overrides)
``injector.autocrane.io/status``                        the injector (what it injected)
``eviction.autocrane.io/opt-out: "true"``                user (never evicted)
``probe.autocrane.io/<name>: <url>``                    user (watchdog probes)
``status.autocrane.io/<name>``, label ``.../health``    the controller (and ``autocrane watchdog``)
``request.data.autocrane.io/<name>``                    the controller (data rollouts)
``status.data.autocrane.io/<name>``                     the controller (the datadeployer's ack)
labels ``rollout.autocrane.io/group``, ``.../stage``    user (staged application rollouts)
``rollout.autocrane.io/release``                        user (ties a release's templates together)
======================================================  =====================================
"""

from __future__ import annotations

DOMAIN = "autocrane.io"

# --- user-facing opt-in and options -------------------------------------------------------------
DATA_PREFIX = "data.autocrane.io/"
"""``data.autocrane.io/<name>: <source>``: the pod wants data set ``<name>`` from repository ``<source>``."""
STORE_LOCATION = "store.autocrane.io/location"
"""Absolute path where data sets appear in the app containers, as ``<location>/<name>``."""
STORE_DEPS = "store.autocrane.io/deps"
"""Comma list of sources the pod consumes indirectly (through another pod): a data rollout of any of them
is gated on this pod's watchdogs too."""
MIN_READY_SECONDS = "watchdoghealthz.autocrane.io/min-ready-seconds"
"""Opts into the watchdoghealthz sidecar: not Ready until no error watchdog for that many seconds."""
EVICTION_OPT_OUT = "eviction.autocrane.io/opt-out"
"""``"true"``: the controller never evicts this pod, whatever its watchdogs say."""

# --- owned by the controller and the sidecars (recognised, never warned about) ------------------
PROBE_PREFIX = "probe.autocrane.io/"
STATUS_PREFIX = "status.autocrane.io/"
HEALTH_LABEL = "status.autocrane.io/health"
"""Label the controller sets from the aggregated watchdog status."""
REQUEST_DATA_PREFIX = "request.data.autocrane.io/"
STATUS_DATA_PREFIX = "status.data.autocrane.io/"

# --- the injector ------------------------------------------------------------------------------
INJECTOR_PREFIX = "injector.autocrane.io/"
INJECTOR_STATUS = INJECTOR_PREFIX + "status"
"""JSON record of what the injector added, so a later run can strip it first."""
INJECT = INJECTOR_PREFIX + "inject"
"""``"false"`` opts the pod out even though it carries opt-in annotations."""
NATIVE_SIDECAR = INJECTOR_PREFIX + "native-sidecar"
"""``true|false``: inject sidecars as native sidecars (init containers with ``restartPolicy: Always``)."""
INIT_POSITION = INJECTOR_PREFIX + "init-position"
"""``first|last``: where the injected init containers go among the pod's own (default first)."""

INJECTED_CONTAINERS = ("datadeployer", "watchdoghealthz")
"""The injected programs whose resources can be overridden per pod."""
RESOURCE_FIELDS = ("cpu", "cpu-limit", "memory", "memory-limit")
"""``injector.autocrane.io/<program>-<field>``: ``cpu``/``memory`` are requests, ``*-limit`` limits."""


def resource_key(program: str, resource_field: str) -> str:
    """``resource_key("datadeployer", "cpu")`` -> ``injector.autocrane.io/datadeployer-cpu``."""
    return f"{INJECTOR_PREFIX}{program}-{resource_field}"


# --- staged application rollouts (labels, so the webhook's objectSelector sees them) ------------
ROLLOUT_GROUP_LABEL = "rollout.autocrane.io/group"
"""Deployments with this label form a staged rollout."""
ROLLOUT_STAGE_LABEL = "rollout.autocrane.io/stage"
"""``"<n>"``: lower stages roll first; absent means 0."""
ROLLOUT_RELEASE_ANNOTATION = "rollout.autocrane.io/release"
"""Optional, on the Deployment: ties the pending templates of one release together across stages."""

# --- Kubernetes' own keys that AutoCrane reads --------------------------------------------------
MIRROR_POD = "kubernetes.io/config.mirror"
"""Set by the kubelet on the API copy of a static pod: its spec is the kubelet's, evicting it does nothing."""

# --- which keys exist ---------------------------------------------------------------------------
OPEN_FAMILIES = (DATA_PREFIX, PROBE_PREFIX, STATUS_PREFIX, REQUEST_DATA_PREFIX, STATUS_DATA_PREFIX)
"""Prefixes whose ``<name>`` part is free; any key in them is recognised."""
CLOSED_FAMILIES: dict[str, frozenset[str]] = {
    "store.autocrane.io/": frozenset({STORE_LOCATION, STORE_DEPS}),
    "watchdoghealthz.autocrane.io/": frozenset({MIN_READY_SECONDS}),
    "eviction.autocrane.io/": frozenset({EVICTION_OPT_OUT}),
    INJECTOR_PREFIX: frozenset({INJECTOR_STATUS, INJECT, NATIVE_SIDECAR, INIT_POSITION}
                               | {resource_key(p, f) for p in INJECTED_CONTAINERS for f in RESOURCE_FIELDS}),
}
"""Prefixes with a fixed set of keys; anything else in them is probably a typo (the injector warns)."""


def is_autocrane_key(key: str) -> bool:
    """True for keys whose prefix is ``autocrane.io`` or a subdomain of it."""
    prefix, slash, _ = key.partition("/")
    return bool(slash) and (prefix == DOMAIN or prefix.endswith("." + DOMAIN))
