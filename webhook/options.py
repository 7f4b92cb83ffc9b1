"""The injector's reading of a pod's annotations: what it asks of the injection (pure).

The webhook's half of the annotation contract (the keys themselves are in ``autocrane.keys``):
:func:`parse_pod` turns a pod's annotations into a frozen :class:`PodOptions` or raises
``errors.AnnotationError`` naming the key and the accepted form; unknown ``*.autocrane.io`` keys
are not errors (a newer AutoCrane may know them) but come back as warnings, which the webhook
passes to the client as AdmissionResponse warnings. Data-set declarations are checked by
``autocrane.datasets`` and min-ready-seconds by ``autocrane.inpod``: the datadeployer and
watchdoghealthz read those values with the same rules, so a pod the webhook admits is one they
accept. Also here: the per-pod resource overrides and Kubernetes quantities, the store location,
and :class:`InjectionStatus`, the record of what an injection added.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from autocrane import caching, datasets, errors, inpod, keys, untrusted

DEFAULT_STORE_LOCATION = "/autocrane/data"
"""Used when ``store.autocrane.io/location`` is absent (and the injector's config does not say otherwise)."""
_KNOWN_CLOSED = frozenset().union(*keys.CLOSED_FAMILIES.values())

# Paths a data volume must never shadow: kernel interfaces and the service-account token.
_RESERVED_PATHS = ("/proc", "/sys", "/dev", "/var/run/secrets", "/run/secrets")
# Matched with fullmatch: ``$`` also matches before a trailing newline, and "/data\n" once
# became a mountPath and a --root with a newline in it.
_PATH_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
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
MAX_STATUS_BYTES = 4096
"""Largest ``injector.autocrane.io/status`` read (the injector writes about 250 bytes)."""


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
class PodOptions:
    """What a pod asks of AutoCrane through its annotations, validated."""

    data_sets: tuple[datasets.DataSet, ...] = ()
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
        return keys.DATA_PREFIX + self.data_sets[0].name if self.data_sets else keys.MIN_READY_SECONDS

    def resources_for(self, program: str) -> ResourceOverrides:
        """Overrides for ``program`` (one of ``INJECTED_CONTAINERS``)."""
        overrides: ResourceOverrides = getattr(self, f"{program}_resources")
        return overrides


def opts_in(annotations: Mapping[str, str] | None) -> bool:
    """Whether the annotations ask for injection (mirrors the webhook's matchConditions CEL)."""
    return any(k.startswith(keys.DATA_PREFIX) or k == keys.MIN_READY_SECONDS for k in (annotations or {}))


def parse_pod(annotations: Mapping[str, str] | None) -> tuple[PodOptions, list[str]]:
    """Parse a pod's annotations; raise ``errors.AnnotationError`` for malformed autocrane keys.

    Returns the request and warnings about unknown ``*.autocrane.io`` keys (short, one per key, for
    AdmissionResponse warnings). Keys of other domains are ignored.
    """
    ours = tuple(sorted((k, v) for k, v in (annotations or {}).items() if keys.is_autocrane_key(k)))
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


PARSED: caching.BoundedCache[tuple[tuple[str, str], ...], tuple[PodOptions, tuple[str, ...]]] = \
    caching.BoundedCache(max_entries=1024, max_bytes=4 << 20, max_entry_bytes=16 << 10)
"""Parsed annotations by their ``*.autocrane.io`` annotations: 4 MiB in all, none over 16 KiB (a pod's
autocrane annotations are a few hundred bytes; more is not a template other pods share)."""


def _parse_ours(ours: tuple[tuple[str, str], ...]) -> tuple[PodOptions, tuple[str, ...]]:
    data_sets: list[datasets.DataSet] = []
    warnings: list[str] = []
    values: dict[str, str] = {}
    for key, value in ours:
        if key.startswith(keys.DATA_PREFIX):
            data_sets.append(datasets.parse(key, value))
        elif key.startswith(keys.OPEN_FAMILIES):
            continue  # owned by the controller and the sidecars; they validate their own
        elif key in _KNOWN_CLOSED:
            values[key] = value
        elif key.startswith(tuple(keys.CLOSED_FAMILIES)):
            warnings.append(f"unknown annotation {untrusted.quoted(key, errors.KEY_SHOWN)} is ignored "
                            "(see docs/injector.md for the known keys)")
        else:
            warnings.append(f"unknown annotation {untrusted.quoted(key, errors.KEY_SHOWN)} is ignored: "
                            "no AutoCrane component reads it")

    status = values.get(keys.INJECTOR_STATUS)
    inject = values.get(keys.INJECT)
    native = values.get(keys.NATIVE_SIDECAR)
    seconds = values.get(keys.MIN_READY_SECONDS)
    location = values.get(keys.STORE_LOCATION)
    request = PodOptions(
        data_sets=tuple(data_sets),
        store_location=None if location is None else parse_store_location(location, key=keys.STORE_LOCATION),
        min_ready_seconds=None if seconds is None else inpod.parse_min_ready_seconds(seconds),
        inject=True if inject is None else parse_bool(keys.INJECT, inject),
        native_sidecar=None if native is None else parse_bool(keys.NATIVE_SIDECAR, native),
        init_position=_parse_init_position(values.get(keys.INIT_POSITION)),
        datadeployer_resources=_parse_overrides("datadeployer", values),
        watchdoghealthz_resources=_parse_overrides("watchdoghealthz", values),
        status=None if status is None else parse_status(status),
    )
    return request, tuple(warnings)


def parse_store_location(value: str, *, key: str = keys.STORE_LOCATION) -> str:
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


def parse_bool(key: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise errors.AnnotationError(key, value, "true or false")
    return text == "true"


def parse_status(value: str) -> InjectionStatus:
    expected = "the JSON the injector writes (delete the annotation, and the injected containers, to start over)"
    try:
        raw = untrusted.json_value(value, what=keys.INJECTOR_STATUS, max_bytes=MAX_STATUS_BYTES, max_depth=2)
        names = {k: raw[k] for k in ("initContainers", "containers", "volumes")}
        version, config = raw["version"], raw["config"]
    except (untrusted.UntrustedValueError, TypeError, KeyError):
        raise errors.AnnotationError(keys.INJECTOR_STATUS, value, expected) from None
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in names.values()) \
            or not isinstance(version, str) or not isinstance(config, str):
        raise errors.AnnotationError(keys.INJECTOR_STATUS, value, expected)
    return InjectionStatus(init_containers=tuple(names["initContainers"]), containers=tuple(names["containers"]),
                           volumes=tuple(names["volumes"]), version=version, config=config)


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
    raise errors.AnnotationError(keys.INIT_POSITION, value, "first or last")


def _parse_overrides(program: str, values: Mapping[str, str]) -> ResourceOverrides:
    parsed: dict[str, str | None] = {}
    for resource_field in keys.RESOURCE_FIELDS:
        key = keys.resource_key(program, resource_field)
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
            limit_key = keys.resource_key(program, resource + "-limit")
            raise errors.AnnotationError(keys.resource_key(program, resource), request,
                                         f"a request no larger than {limit_key} ({limit})")
    return ResourceOverrides(cpu_request=parsed["cpu"], cpu_limit=parsed["cpu-limit"],
                             memory_request=parsed["memory"], memory_limit=parsed["memory-limit"])


def amount(quantity: str) -> Decimal:
    """``parse_quantity`` for quantities already validated; raise ``ValueError`` otherwise."""
    value = parse_quantity(quantity)
    if value is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return value
