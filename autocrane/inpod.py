"""The in-pod servers' wire contract: ports, paths, the datadeployer's acknowledgement (pure).

The injector puts two servers into opted-in pods; the kubelet and the controller talk to them,
and the three sides must agree on what is here:

- **ports**: :data:`DATADEPLOYER_STATUS_PORT` and :data:`WATCHDOGHEALTHZ_PORT`, the defaults of
  the injector's settings, of ``autocrane datadeployer --port``, ``autocrane watchdoghealthz
  --port`` and ``autocrane controller --datadeployer-port`` (the injector passes its own values
  on the command line, so a changed setting reaches the containers);
- **paths**: ``/status``, ``/synced``, ``/watchdog`` (datadeployer), ``/healthz``
  (watchdoghealthz), ``/livez`` (both);
- **the acknowledgement**: the datadeployer's ``GET /status`` answer (:class:`StatusReport`,
  written with :func:`set_report`), which the controller reads back with :func:`parse_acks` into
  :class:`Ack` records, and mirrors on the pod as ``status.data.autocrane.io/<name>``
  (:func:`mirror_value`, read by ``autocrane status`` with :func:`mirrored_version`);
- **min-ready-seconds**: the value of ``watchdoghealthz.autocrane.io/min-ready-seconds``, which the
  injector validates and watchdoghealthz reads (:func:`parse_min_ready_seconds`).

Whoever runs in the pod writes the ``/status`` answer, so the reading side trusts nothing in it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TypedDict

from autocrane import errors, keys, manifests, untrusted

DATADEPLOYER_STATUS_PORT = 8098
"""The datadeployer sidecar's status port (``/status``, ``/synced``, ``/watchdog``, ``/livez``, ``/metrics``)."""
WATCHDOGHEALTHZ_PORT = 8097
"""The watchdoghealthz sidecar's port (``/healthz``, ``/livez``, ``/metrics``)."""

DATADEPLOYER_PORT_NAME = "autocrane-sync"
"""The name of the datadeployer's container port (the chart's PodMonitor scrapes it by name)."""
WATCHDOGHEALTHZ_PORT_NAME = "autocrane-ready"
"""The name of watchdoghealthz's container port (likewise)."""

STATUS_PATH = "/status"
"""The datadeployer's acknowledgement, read by the controller."""
SYNCED_PATH = "/synced"
"""200 once every data set is present as requested: the native sidecar's startupProbe."""
WATCHDOG_PATH = "/watchdog"
"""The datadeployer's own watchdog (``probe.autocrane.io/datadeployer``)."""
HEALTHZ_PATH = "/healthz"
"""watchdoghealthz's readiness answer, its container's readinessProbe."""
LIVEZ_PATH = "/livez"
"""Both servers answer it while their work loop runs: the livenessProbe."""
METRICS_PATH = "/metrics"
"""Both servers' Prometheus metrics (the chart's PodMonitor scrapes them on the ports above)."""


# --- the datadeployer's GET /status ---------------------------------------------------------------

class SetReport(TypedDict):
    """One data set in the ``/status`` answer (times are RFC3339 UTC, or null)."""

    source: str
    requested: str | None
    """The version asked for (or chosen as the fallback)."""
    fallback: bool
    """True when ``requested`` is the repository's last known good, for want of a request."""
    version: str | None
    """Acknowledged: the version live at ``<root>/<name>``."""
    sha256: str | None
    deployedAt: str | None
    """When ``version`` went live (the bake clock runs from here)."""
    error: str | None
    errorAt: str | None
    failingSince: str | None


class StatusReport(TypedDict):
    """The whole ``/status`` answer."""

    sets: dict[str, SetReport]
    annotationsError: str | None


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else manifests.format_time(value)


def set_report(*, source: str, requested: str | None, fallback: bool, version: str | None, sha256: str | None,
               deployed_at: dt.datetime | None, error: str | None, error_at: dt.datetime | None,
               failing_since: dt.datetime | None) -> SetReport:
    """One data set's entry, as the datadeployer writes it."""
    return {"source": source, "requested": requested, "fallback": fallback, "version": version, "sha256": sha256,
            "deployedAt": _time(deployed_at), "error": error, "errorAt": _time(error_at),
            "failingSince": _time(failing_since)}


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """What a pod's datadeployer reports for one data set, as far as it can be believed."""

    version: str | None
    """The live version; None when it reports none (or one that is not a version id)."""
    deployed_at: float | None = None
    """When it went live, POSIX seconds; None when unknown or not believable."""
    error: str | None = None
    """Its last error, cut to :data:`MAX_ACK_ERROR` characters."""


MAX_CLOCK_SKEW = 60.0
"""Seconds a datadeployer's ``deployedAt`` may lie ahead of the controller's clock; later ones are ignored."""
MAX_ACK_ERROR = 512
"""Characters of a datadeployer's ``error`` kept (it ends up in the rollback message and Event)."""
_MAX_SET_NAME = 253


def parse_acks(body: object, *, now: float) -> dict[str, Ack]:
    """The datadeployer's ``GET /status`` answer -> data-set name -> :class:`Ack` (garbage -> nothing).

    Whoever runs in the pod writes this answer, so nothing in it is taken on trust: a ``version``
    that is not a version id is no acknowledgement (it would be mirrored into an annotation), a
    ``deployedAt`` that is not an RFC3339 time in years 1-9999 UTC, or lies more than
    :data:`MAX_CLOCK_SKEW` seconds after ``now``, is no time (the bake clock runs from the latest
    ``deployedAt``: one from the future would hold the stage, and the rollout of every pod of the
    source, for as long as it lies), and ``error`` is cut to :data:`MAX_ACK_ERROR` characters.
    """
    sets = body.get("sets") if isinstance(body, dict) else None
    out: dict[str, Ack] = {}
    for name, entry in sets.items() if isinstance(sets, dict) else ():
        if not isinstance(entry, dict) or not isinstance(name, str) or len(name) > _MAX_SET_NAME:
            continue
        try:
            version = None if entry.get("version") is None else manifests.check_version(entry["version"])
        except manifests.ManifestError:
            version = None
        at = untrusted.timestamp(entry.get("deployedAt"))
        if at is not None and at > now + MAX_CLOCK_SKEW:
            at = None
        error = entry.get("error")
        out[name] = Ack(version, at, error[:MAX_ACK_ERROR] if isinstance(error, str) else None)
    return out


# --- the mirror on the pod: status.data.autocrane.io/<name> ---------------------------------------

MAX_MIRROR_BYTES = 4096
"""Largest ``status.data.autocrane.io/<name>`` value read (the controller writes about 60 bytes)."""


def mirror_value(ack: Ack) -> str:
    """The annotation value mirroring ``ack``: only the version and when it went live, so it changes
    once per deployment."""
    when = None if ack.deployed_at is None else untrusted.rfc3339(ack.deployed_at)
    return json.dumps({"version": ack.version, "deployedAt": when}, separators=(",", ":"))


def mirrored_version(value: str, key: str) -> str:
    """The version a mirror value records; UntrustedValueError or ManifestError (both ValueErrors) otherwise."""
    decoded = untrusted.json_value(value, what=key, max_bytes=MAX_MIRROR_BYTES)
    if not isinstance(decoded, dict) or "version" not in decoded:
        raise untrusted.UntrustedValueError(f'{key}: expected {{"version": "<id>", "deployedAt": "<time>"}}')
    return manifests.check_version(decoded["version"], f"{key}: version")


# --- watchdoghealthz.autocrane.io/min-ready-seconds ------------------------------------------------

MAX_SECONDS = 2**31 - 1
"""Kubernetes' int32 fields; anything larger is a typo."""


def parse_min_ready_seconds(value: str, key: str = keys.MIN_READY_SECONDS) -> int:
    """A whole number of seconds >= 0; AnnotationError naming ``key`` otherwise."""
    text = value.strip()
    # The length first: int() refuses more than 4,300 digits with a ValueError of its own.
    if len(text) > len(str(MAX_SECONDS)) or not text.isascii() or not text.isdigit() or int(text) > MAX_SECONDS:
        raise errors.AnnotationError(key, value, "a whole number of seconds >= 0, like 30")
    return int(text)
