"""The injector's configuration: what it injects (images, resources, ports, volumes) and how.

Read once at start from a YAML file (the chart mounts it from a ConfigMap), then overridden by flags
or environment variables passed as ``overrides``. Keys are the field names below, in the file and in
``overrides`` alike; an unknown key is an error naming the key, never silently ignored. Resources
are given in the Kubernetes shape and merged over the defaults::

    datadeployer_image: registry.example/autocrane-sidecar:0.1.0
    native_sidecar: true
    datadeployer_resources:
      limits: {memory: 512Mi}

``config_hash()`` is recorded in every pod the injector touches, so a configuration change is visible
on the pods (``injector.autocrane.io/status``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autocrane import errors, inpod, keys
from webhook import options

PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests and limits of one injected container. Every injected container sets all four."""

    cpu_request: str
    """CPU request, a Kubernetes quantity like ``50m``."""
    memory_request: str
    """Memory request, like ``64Mi``."""
    cpu_limit: str
    """CPU limit, like ``1``; at least the request."""
    memory_limit: str
    """Memory limit, like ``256Mi``; at least the request."""

    def to_kubernetes(self) -> dict[str, dict[str, str]]:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclass(frozen=True, slots=True)
class InjectorSettings:
    """Everything the injector needs besides the pod. Defaults suit the Helm chart's install."""

    datadeployer_image: str = "autocrane/sidecar:0.1.0"
    """Image of the datadeployer init container and sidecar (runs ``autocrane datadeployer``)."""
    watchdoghealthz_image: str = "autocrane/sidecar:0.1.0"
    """Image of the watchdoghealthz sidecar (runs ``autocrane watchdoghealthz``)."""
    image_pull_policy: str = "IfNotPresent"
    """``imagePullPolicy`` of every injected container: Always, IfNotPresent or Never."""
    datadeployer_resources: Resources = Resources("50m", "64Mi", "1", "256Mi")
    """Requests/limits of the datadeployer containers (unpacking archives wants a full CPU briefly)."""
    watchdoghealthz_resources: Resources = Resources("10m", "32Mi", "100m", "96Mi")
    """Requests/limits of the watchdoghealthz sidecar (a small HTTP server reading one file)."""
    watchdoghealthz_port: int = inpod.WATCHDOGHEALTHZ_PORT
    """Port of the watchdoghealthz sidecar's ``/healthz``; shares the pod's network namespace with the app."""
    datadeployer_status_port: int = inpod.DATADEPLOYER_STATUS_PORT
    """Port of the datadeployer sidecar's status endpoint (``/synced`` is its native startup probe)."""
    native_sidecar: bool = False
    """Default for pods without ``injector.autocrane.io/native-sidecar``: inject sidecars as init containers
    with ``restartPolicy: Always`` (needs Kubernetes >= 1.29). Pods meant to finish (restartPolicy Never or
    OnFailure, e.g. Jobs) always get native sidecars unless they opt out per pod."""
    data_repository_url: str = "http://autocrane-datarepository.autocrane-system.svc:8080"
    """Base URL of the data repository the datadeployer downloads from."""
    store_location: str = options.DEFAULT_STORE_LOCATION
    """Store location for pods without ``store.autocrane.io/location``."""
    data_size_limit: str = "1Gi"
    """``sizeLimit`` of the emptyDir holding the data sets (two versions must fit during a swap)."""
    tmp_size_limit: str = "32Mi"
    """``sizeLimit`` of the emptyDir mounted at /tmp in injected containers (their root fs is read-only)."""
    startup_timeout_seconds: int = 3600
    """How long a native datadeployer sidecar may take to first sync before the kubelet restarts it."""
    run_as_user: int = 65532
    """UID (and GID) of injected containers; non-zero, as Pod Security ``restricted`` requires."""

    def config_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the settings as canonical JSON: stable across runs."""
        return _config_hash(self)

    def resources(self, program: str) -> Resources:
        """The default resources of ``program`` (``datadeployer`` or ``watchdoghealthz``)."""
        value: Resources = getattr(self, f"{program}_resources")
        return value


_FIELDS = {f.name: f for f in dataclasses.fields(InjectorSettings)}


@functools.lru_cache(maxsize=16)
def _config_hash(settings: InjectorSettings) -> str:
    # Settings are frozen (hashable) and read once, but every admission records the hash: cache it.
    canonical = json.dumps(dataclasses.asdict(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


ENV_PREFIX = "AUTOCRANE_INJECTOR_"


def environment_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """``AUTOCRANE_INJECTOR_<FIELD>=value`` variables as overrides (e.g. ``AUTOCRANE_INJECTOR_NATIVE_SIDECAR=true``).

    Unknown fields are refused by :func:`load` like any other unknown key, naming the variable's field.
    """
    return {key.removeprefix(ENV_PREFIX).lower(): value for key, value in environ.items()
            if key.startswith(ENV_PREFIX)}


def load(path: Path | None = None, overrides: Mapping[str, object] | None = None) -> InjectorSettings:
    """Settings from the YAML file at ``path`` (if any), then ``overrides`` on top; raise ``errors.ConfigError``.

    Override values may be strings (from flags or the environment): ``"true"``, ``"8097"`` and so on
    are converted like the file's values.
    """
    if path is None:
        return parse(None, "", overrides)
    try:
        text = path.read_text()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read injector config {path}: {exc}") from None
    return parse(text, str(path), overrides)


def parse(text: str | None, where: str, overrides: Mapping[str, object] | None = None) -> InjectorSettings:
    """Settings from the YAML ``text`` (None: none) read from ``where``, then ``overrides``; as :func:`load`."""
    raw: dict[str, object] = {}
    if text is not None:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise errors.ConfigError(f"cannot read injector config {where}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise errors.ConfigError(f"injector config {where}: expected a mapping of settings, "
                                     f"got {type(loaded).__name__}")
        raw.update(_checked_keys(loaded or {}, where))
    raw.update(_checked_keys(dict(overrides or {}), "overrides"))
    defaults = InjectorSettings()
    values: dict[str, Any] = {name: _convert(name, value, getattr(defaults, name)) for name, value in raw.items()}
    return _validated(dataclasses.replace(defaults, **values))


def _checked_keys(values: Mapping[Any, object], where: str) -> dict[str, object]:
    for key in values:
        if key not in _FIELDS:
            raise errors.ConfigError(f"{where}: unknown setting {key!r}; known settings: {', '.join(_FIELDS)}")
    return {str(k): v for k, v in values.items()}


def _convert(name: str, value: object, default: object) -> object:
    if isinstance(default, Resources):
        return _resources(name, value, default)
    if isinstance(default, bool):
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, bool):
            return value
        raise errors.ConfigError(f"setting {name!r}: {value!r} is not valid: expected true or false")
    if isinstance(default, int):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise errors.ConfigError(f"setting {name!r}: {value!r} is not valid: expected a whole number")
    if not isinstance(value, str) or not value.strip():
        raise errors.ConfigError(f"setting {name!r}: {value!r} is not valid: expected a non-empty string")
    return value.strip()


def _resources(name: str, value: object, default: Resources) -> Resources:
    expected = "a mapping like {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: '1', memory: 256Mi}}"
    if not isinstance(value, dict) or not set(value) <= {"requests", "limits"}:
        raise errors.ConfigError(f"setting {name!r}: {value!r} is not valid: expected {expected}")
    merged = dataclasses.asdict(default)
    for kind in ("requests", "limits"):
        section = value.get(kind) or {}
        if not isinstance(section, dict) or not set(section) <= {"cpu", "memory"}:
            raise errors.ConfigError(f"setting {name!r}.{kind}: {section!r} is not valid: expected cpu and/or memory")
        suffix = {"requests": "request", "limits": "limit"}[kind]
        for resource, quantity in section.items():
            merged[f"{resource}_{suffix}"] = str(quantity)
    return Resources(**merged)


def _validated(s: InjectorSettings) -> InjectorSettings:
    if s.image_pull_policy not in PULL_POLICIES:
        raise errors.ConfigError(f"setting 'image_pull_policy': {s.image_pull_policy!r} is not valid: "
                                 f"expected one of {', '.join(PULL_POLICIES)}")
    for name in ("watchdoghealthz_port", "datadeployer_status_port"):
        if not 1 <= getattr(s, name) <= 65535:
            raise errors.ConfigError(f"setting {name!r}: {getattr(s, name)} is not valid: "
                                     "expected a port from 1 to 65535")
    if s.watchdoghealthz_port == s.datadeployer_status_port:
        raise errors.ConfigError("settings 'watchdoghealthz_port' and 'datadeployer_status_port' must differ "
                                 "(the containers share the pod's network namespace)")
    if s.startup_timeout_seconds < 1 or s.run_as_user < 1:
        raise errors.ConfigError("settings 'startup_timeout_seconds' and 'run_as_user' must be at least 1")
    for name in ("data_size_limit", "tmp_size_limit"):
        _check_quantity(name, getattr(s, name))
    for program in keys.INJECTED_CONTAINERS:
        res = s.resources(program)
        for field in dataclasses.fields(Resources):
            _check_quantity(f"{program}_resources.{field.name}", getattr(res, field.name))
        for resource in ("cpu", "memory"):
            request, limit = getattr(res, f"{resource}_request"), getattr(res, f"{resource}_limit")
            if options.amount(request) > options.amount(limit):
                raise errors.ConfigError(f"setting '{program}_resources': {resource} request {request} is larger than "
                                         f"its limit {limit}")
    try:
        location = options.parse_store_location(s.store_location, key="store_location")
    except errors.AnnotationError as exc:
        raise errors.ConfigError(f"setting 'store_location': {s.store_location!r} is not valid: "
                                 f"expected {exc.expected}") from None
    return dataclasses.replace(s, store_location=location)


def _check_quantity(name: str, value: str) -> None:
    quantity = options.parse_quantity(value)
    if quantity is None or quantity <= 0:
        raise errors.ConfigError(f"setting {name!r}: {value!r} is not valid: expected a positive Kubernetes quantity "
                                 "like 100m, 1 or 64Mi")

