"""Every ``autocrane.io`` annotation and label key, and the pure parsing of a pod's annotations.

This is the public contract between users, the injector, the controller and the sidecars, kept in one
place so a key is spelled once. Parsing turns a pod's annotations into a frozen ``PodSpecRequest`` or
raises ``errors.AnnotationError`` naming the key and the accepted form; unknown ``*.autocrane.io`` keys are
not errors (a newer AutoCrane may know them) but come back as warnings, which the webhook passes to
the client as AdmissionResponse warnings.

Families (``<name>`` is free, the rest is fixed):

======================================================  =====================================  =========
key                                                     written by                             parsed here
======================================================  =====================================  =========
``data.autocrane.io/<name>: <source>``                  user (opts into the datadeployer)      yes
``store.autocrane.io/location: <absolute path>``        user                                   yes
``store.autocrane.io/deps: <source>, ...``              user (rollout dependents)              recognised
``watchdoghealthz.autocrane.io/min-ready-seconds: <n>``  user (opts into watchdoghealthz)       yes
``injector.autocrane.io/<override>``                    user (per-pod injector overrides)      yes
``injector.autocrane.io/status``                        the injector (what it injected)        yes
``probe.autocrane.io/<name>: <url>``                    user (watchdog probes)                 recognised
``status.autocrane.io/<name>``, label ``.../health``    the controller                         recognised
``request.data.autocrane.io/<name>``                    the controller (data rollouts)         recognised
``status.data.autocrane.io/<name>``                     the controller (datadeployer's ack)    recognised
======================================================  =====================================  =========
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from autocrane import caching, errors, untrusted

DOMAIN = "autocrane.io"

# --- user-facing opt-in and options -------------------------------------------------------------
DATA_PREFIX = "data.autocrane.io/"
"""``data.autocrane.io/<name>: <source>``: the pod wants data set ``<name>`` from repository ``<source>``."""
STORE_LOCATION = "store.autocrane.io/location"
"""Absolute path where data sets appear in the app containers, as ``<location>/<name>``."""
DEFAULT_STORE_LOCATION = "/autocrane/data"
"""Used when ``store.autocrane.io/location`` is absent (and the injector's config does not say otherwise)."""
STORE_DEPS = "store.autocrane.io/deps"
"""Comma list of sources the pod consumes indirectly (through another pod): a data rollout of any of them
is gated on this pod's watchdogs too."""
MIN_READY_SECONDS = "watchdoghealthz.autocrane.io/min-ready-seconds"
"""Opts into the watchdoghealthz sidecar: not Ready until no error watchdog for that many seconds."""

# --- owned by the controller and the sidecars (recognised, never warned about) ------------------
PROBE_PREFIX = "probe.autocrane.io/"
STATUS_PREFIX = "status.autocrane.io/"
HEALTH_LABEL = "status.autocrane.io/health"
"""Label the controller sets from the aggregated watchdog status."""
REQUEST_DATA_PREFIX = "request.data.autocrane.io/"
STATUS_DATA_PREFIX = "status.data.autocrane.io/"
EVICTION_OPT_OUT = "eviction.autocrane.io/opt-out"
"""``"true"``: the controller never evicts this pod, whatever its watchdogs say."""

# --- the injector ------------------------------------------------------------------------------
INJECTOR_PREFIX = "injector.autocrane.io/"
INJECTOR_STATUS = INJECTOR_PREFIX + "status"
"""JSON record of what the injector added, so a later run can strip it first (see ``InjectionStatus``)."""
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


_INJECTOR_KEYS = frozenset(
    {INJECTOR_STATUS, INJECT, NATIVE_SIDECAR, INIT_POSITION}
    | {resource_key(p, f) for p in INJECTED_CONTAINERS for f in RESOURCE_FIELDS}
)
_OPEN_FAMILIES = (DATA_PREFIX, PROBE_PREFIX, STATUS_PREFIX, REQUEST_DATA_PREFIX, STATUS_DATA_PREFIX)
"""Prefixes whose ``<name>`` part is free; any key in them is recognised."""
_CLOSED_FAMILIES = {
    "store.autocrane.io/": frozenset({STORE_LOCATION, STORE_DEPS}),
    "watchdoghealthz.autocrane.io/": frozenset({MIN_READY_SECONDS}),
    "eviction.autocrane.io/": frozenset({EVICTION_OPT_OUT}),
    INJECTOR_PREFIX: _INJECTOR_KEYS,
}
"""Prefixes with a fixed set of keys; anything else in them is probably a typo and is warned about."""
_KNOWN_CLOSED = frozenset().union(*_CLOSED_FAMILIES.values())

# Paths a data volume must never shadow: kernel interfaces and the service-account token.
_RESERVED_PATHS = ("/proc", "/sys", "/dev", "/var/run/secrets", "/run/secrets")
# Matched with fullmatch: ``$`` also matches before a trailing newline, and "/data\n" once
# became a mountPath and a --root with a newline in it.
_PATH_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
                       r"(?:[eE](?P<exponent>[+-]?[0-9]+)|(?P<suffix>[KMGTPE]i|[numkMGTPE]))?")
MAX_QUANTITY_CHARS = 64
"""Longest resource quantity accepted (``1e9``, ``64Mi`` and ``0.000000001`` are far shorter)."""
MAX_QUANTITY = Decimal(2**63 - 1)
"""Kubernetes caps every quantity at 2^63-1 (in its base unit); a larger one is refused here."""
_MAX_EXPONENT = 30  # 1e30 is far past MAX_QUANTITY; 1e-30 far below a nano
_SUFFIX_FACTOR = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
_MAX_SECONDS = 2**31 - 1  # Kubernetes' int32 fields; anything larger is a typo
MAX_STATUS_BYTES = 4096
"""Largest ``injector.autocrane.io/status`` read (the injector writes about 250 bytes)."""


@dataclass(frozen=True, slots=True)
class DataSet:
    """One ``data.autocrane.io/<name>: <source>`` annotation."""

    name: str
    """DNS-1123 label; the data set appears at ``<store location>/<name>``."""
    source: str
    """Where the data repository finds it (opaque here; the datadeployer interprets it)."""


@dataclass(frozen=True, slots=True)
class ResourceOverrides:
    """Per-pod resource overrides for one injected program; ``None`` keeps the injector's default."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None


@dataclass(frozen=True, slots=True)
class InjectionStatus:
    """The ``injector.autocrane.io/status`` record: what one injection added to the pod."""

    init_containers: tuple[str, ...]
    """Names of the injected init containers (native sidecars included)."""
    containers: tuple[str, ...]
    """Names of the injected (classic sidecar) containers."""
    volumes: tuple[str, ...]
    """Names of the injected volumes; mounts of them in any container are injected too."""
    version: str
    """AutoCrane version of the injector."""
    config: str
    """``InjectorSettings.config_hash()`` of the injector's configuration."""

    def to_json(self) -> str:
        """Compact JSON with sorted keys, so the same injection writes the same bytes."""
        return json.dumps(
            {"initContainers": list(self.init_containers), "containers": list(self.containers),
             "volumes": list(self.volumes), "version": self.version, "config": self.config},
            sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PodSpecRequest:
    """What a pod asks of AutoCrane through its annotations, validated."""

    data_sets: tuple[DataSet, ...] = ()
    """Sorted by name. Non-empty means the pod wants the datadeployer."""
    store_location: str | None = None
    """Normalised absolute path, or ``None`` for the injector's default."""
    min_ready_seconds: int | None = None
    """Non-``None`` means the pod wants the watchdoghealthz readiness sidecar."""
    inject: bool = True
    """``False`` when the pod opted out with ``injector.autocrane.io/inject: "false"``."""
    native_sidecar: bool | None = None
    """Per-pod native-sidecar choice, ``None`` for the injector's default."""
    init_position: Literal["first", "last"] = "first"
    """Where injected init containers go among the pod's own."""
    datadeployer_resources: ResourceOverrides = ResourceOverrides()
    """Per-pod resource overrides of the datadeployer containers."""
    watchdoghealthz_resources: ResourceOverrides = ResourceOverrides()
    """Per-pod resource overrides of the watchdoghealthz container."""
    status: InjectionStatus | None = None
    """A previous injection's record, if the pod carries one."""

    @property
    def wants_datadeployer(self) -> bool:
        return bool(self.data_sets)

    @property
    def wants_watchdoghealthz(self) -> bool:
        return self.min_ready_seconds is not None

    @property
    def opted_in(self) -> bool:
        return self.wants_datadeployer or self.wants_watchdoghealthz

    def opt_in_key(self) -> str:
        """The annotation that asked for injection (the first data set's, else min-ready-seconds)."""
        return DATA_PREFIX + self.data_sets[0].name if self.data_sets else MIN_READY_SECONDS

    def resources_for(self, program: str) -> ResourceOverrides:
        """Overrides for ``program`` (one of ``INJECTED_CONTAINERS``)."""
        overrides: ResourceOverrides = getattr(self, f"{program}_resources")
        return overrides


def is_autocrane_key(key: str) -> bool:
    """True for keys whose prefix is ``autocrane.io`` or a subdomain of it."""
    prefix, slash, _ = key.partition("/")
    return bool(slash) and (prefix == DOMAIN or prefix.endswith("." + DOMAIN))


def opts_in(annotations: Mapping[str, str] | None) -> bool:
    """Whether the annotations ask for injection (mirrors the webhook's matchConditions CEL)."""
    return any(k.startswith(DATA_PREFIX) or k == MIN_READY_SECONDS for k in (annotations or {}))


def parse_pod(annotations: Mapping[str, str] | None) -> tuple[PodSpecRequest, list[str]]:
    """Parse a pod's annotations; raise ``errors.AnnotationError`` for malformed autocrane keys.

    Returns the request and warnings about unknown ``*.autocrane.io`` keys (short, one per key, for
    AdmissionResponse warnings). Keys of other domains are ignored.
    """
    ours = tuple(sorted((k, v) for k, v in (annotations or {}).items() if is_autocrane_key(k)))
    for key, value in ours:
        if not isinstance(value, str):
            raise errors.AnnotationError(key, value, "a string (quote the value in YAML)")
    # Pure on immutable input: the pods of one workload carry the same annotations, so admissions
    # mostly hit the cache. Errors are raised again each time (only results are kept).
    parsed = PARSED.get(ours)
    if parsed is None:
        parsed = _parse_ours(ours)
        # The key's characters count twice: the request holds parts of them (sources, paths).
        PARSED.put(ours, parsed, 2 * sum(len(key) + len(value) for key, value in ours) + 512)
    request, warnings = parsed
    return request, list(warnings)


PARSED: caching.BoundedCache[tuple[tuple[str, str], ...], tuple[PodSpecRequest, tuple[str, ...]]] = \
    caching.BoundedCache(max_entries=1024, max_bytes=4 << 20, max_entry_bytes=16 << 10)
"""Parsed annotations by their ``*.autocrane.io`` annotations: 4 MiB in all, none over 16 KiB (a pod's
autocrane annotations are a few hundred bytes; more is not a template other pods share)."""


def _parse_ours(ours: tuple[tuple[str, str], ...]) -> tuple[PodSpecRequest, tuple[str, ...]]:
    data_sets: list[DataSet] = []
    warnings: list[str] = []
    values: dict[str, str] = {}
    for key, value in ours:
        if key.startswith(DATA_PREFIX):
            data_sets.append(parse_data_set(key, value))
        elif key.startswith(_OPEN_FAMILIES):
            continue  # owned by the controller and the sidecars; they validate their own
        elif key in _KNOWN_CLOSED:
            values[key] = value
        elif key.startswith(tuple(_CLOSED_FAMILIES)):
            warnings.append(f"unknown annotation {untrusted.quoted(key, errors.KEY_SHOWN)} is ignored "
                            "(see docs/injector.md for the known keys)")
        else:
            warnings.append(f"unknown annotation {untrusted.quoted(key, errors.KEY_SHOWN)} is ignored: "
                            "no AutoCrane component reads it")

    status = values.get(INJECTOR_STATUS)
    inject = values.get(INJECT)
    native = values.get(NATIVE_SIDECAR)
    seconds = values.get(MIN_READY_SECONDS)
    location = values.get(STORE_LOCATION)
    request = PodSpecRequest(
        data_sets=tuple(data_sets),
        store_location=None if location is None else parse_store_location(location, key=STORE_LOCATION),
        min_ready_seconds=None if seconds is None else parse_seconds(MIN_READY_SECONDS, seconds),
        inject=True if inject is None else parse_bool(INJECT, inject),
        native_sidecar=None if native is None else parse_bool(NATIVE_SIDECAR, native),
        init_position=_parse_init_position(values.get(INIT_POSITION)),
        datadeployer_resources=_parse_overrides("datadeployer", values),
        watchdoghealthz_resources=_parse_overrides("watchdoghealthz", values),
        status=None if status is None else parse_status(status),
    )
    return request, tuple(warnings)


def parse_data_set(key: str, value: str) -> DataSet:
    name = key.removeprefix(DATA_PREFIX)
    if not is_dns1123_label(name):
        raise errors.AnnotationError(key, value, "a key data.autocrane.io/<name> whose name is a DNS-1123 label "
                                     "(lowercase letters, digits and '-', at most 63 characters), "
                                     "like data.autocrane.io/models")
    if not value.strip():
        raise errors.AnnotationError(key, value, "a non-empty data-repository source, like models/resnet")
    return DataSet(name=name, source=value.strip())


def parse_store_location(value: str, *, key: str = STORE_LOCATION) -> str:
    """Validate and normalise a store location; ``key`` names the annotation or setting in errors."""
    like = "an absolute path like /data"
    if not value.startswith("/"):
        raise errors.AnnotationError(key, value, like)
    if len(value) > 1024 or not _PATH_CHARS.fullmatch(value):
        raise errors.AnnotationError(key, value, f"{like} made of letters, digits, '.', '_', '-' and '/'")
    if ".." in value.split("/"):
        raise errors.AnnotationError(key, value, f"{like} without '..' segments")
    path = "/" + posixpath.normpath(value).lstrip("/")  # normpath keeps a leading '//'
    if path == "/":
        raise errors.AnnotationError(key, value, f"{like}, not the root directory")
    if any(is_within(path, reserved) for reserved in _RESERVED_PATHS):
        raise errors.AnnotationError(key, value, f"{like} outside {', '.join(_RESERVED_PATHS)}")
    return path


def parse_seconds(key: str, value: str) -> int:
    text = value.strip()
    # The length first: int() refuses more than 4,300 digits with a ValueError of its own.
    if len(text) > len(str(_MAX_SECONDS)) or not text.isascii() or not text.isdigit() or int(text) > _MAX_SECONDS:
        raise errors.AnnotationError(key, value, "a whole number of seconds >= 0, like 30")
    return int(text)


def parse_bool(key: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise errors.AnnotationError(key, value, "true or false")
    return text == "true"


def parse_status(value: str) -> InjectionStatus:
    expected = "the JSON the injector writes (delete the annotation, and the injected containers, to start over)"
    try:
        raw = untrusted.json_value(value, what=INJECTOR_STATUS, max_bytes=MAX_STATUS_BYTES, max_depth=2)
        names = {k: raw[k] for k in ("initContainers", "containers", "volumes")}
        version, config = raw["version"], raw["config"]
    except (untrusted.UntrustedValueError, TypeError, KeyError):
        raise errors.AnnotationError(INJECTOR_STATUS, value, expected) from None
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in names.values()) \
            or not isinstance(version, str) or not isinstance(config, str):
        raise errors.AnnotationError(INJECTOR_STATUS, value, expected)
    return InjectionStatus(init_containers=tuple(names["initContainers"]), containers=tuple(names["containers"]),
                           volumes=tuple(names["volumes"]), version=version, config=config)


def is_dns1123_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS1123_LABEL.fullmatch(name))


def is_within(path: str, parent: str) -> bool:
    """True if normalised absolute ``path`` is ``parent`` or below it."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes resource quantity (``100m``, ``1.5``, ``64Mi``, ``1e3``) as a number, or ``None``.

    ``None`` too for more than :data:`MAX_QUANTITY_CHARS` characters, an exponent beyond
    +-30, or more than :data:`MAX_QUANTITY`: ``Decimal`` raises ``InvalidOperation`` for
    ``1e999999999``, which once made the webhook answer "internal error".
    """
    match = _QUANTITY.fullmatch(text) if len(text) <= MAX_QUANTITY_CHARS else None
    if match is None:
        return None
    number = Decimal(match["number"])
    if match["exponent"] is not None:
        exponent = int(match["exponent"])
        value = number.scaleb(exponent) if abs(exponent) <= _MAX_EXPONENT else MAX_QUANTITY + 1
    else:  # "Ei" is exbibytes, not an exponent (it was read as one, and int("i") was a 500)
        value = number * _SUFFIX_FACTOR[match["suffix"] or ""]
    return value if value <= MAX_QUANTITY else None


def _parse_init_position(value: str | None) -> Literal["first", "last"]:
    text = (value or "first").strip().lower()
    if text == "first":
        return "first"
    if text == "last":
        return "last"
    raise errors.AnnotationError(INIT_POSITION, value, "first or last")


def _parse_overrides(program: str, values: Mapping[str, str]) -> ResourceOverrides:
    parsed: dict[str, str | None] = {}
    for resource_field in RESOURCE_FIELDS:
        key = resource_key(program, resource_field)
        value = values.get(key)
        if value is not None:
            example = "100m or 1" if resource_field.startswith("cpu") else "64Mi or 1Gi"
            quantity = parse_quantity(value.strip())
            if quantity is None or quantity <= 0:
                raise errors.AnnotationError(key, value, f"a positive Kubernetes quantity like {example}")
            value = value.strip()
        parsed[resource_field] = value
    for resource in ("cpu", "memory"):
        request, limit = parsed[resource], parsed[f"{resource}-limit"]
        if request is not None and limit is not None and amount(request) > amount(limit):
            limit_key = resource_key(program, resource + "-limit")
            raise errors.AnnotationError(resource_key(program, resource), request,
                                         f"a request no larger than {limit_key} ({limit})")
    return ResourceOverrides(cpu_request=parsed["cpu"], cpu_limit=parsed["cpu-limit"],
                             memory_request=parsed["memory"], memory_limit=parsed["memory-limit"])


def amount(quantity: str) -> Decimal:
    """``parse_quantity`` for quantities already validated; raise ``ValueError`` otherwise."""
    value = parse_quantity(quantity)
    if value is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return value
