"""Prometheus metrics: one registry, one naming rule, one ``/metrics`` endpoint.

Every metric is named ``autocrane_<area>_<what>_<unit>``: ``area`` is the program
(``webhook``, ``controller``, ``datadeploy``...), ``what`` says what is measured in snake case,
and ``unit`` is a base unit (``seconds``, ``bytes``, ``timestamp_seconds``, ``ratio``, ``info``)
or, for a counter, ``total``. Counts that are not totals (an in-flight gauge) take the counted
thing as unit, e.g. ``autocrane_webhook_admissions_in_flight_requests``. The constructors here
enforce the rule, so a dashboard can rely on it.

The registry is our own rather than prometheus_client's global one, so only AutoCrane's
metrics and the process collectors appear, and a library that registers metrics on import
cannot change what we expose. The endpoint is a plain Starlette route that the programs mount
on their health port; it honours ``Accept`` (OpenMetrics or the text format).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import prometheus_client
from prometheus_client import exposition
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# `*_created` series (one per counter and histogram) double the output and no dashboard of ours uses them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)
prometheus_client.GCCollector(registry=REGISTRY)

UNITS = frozenset({"seconds", "bytes", "timestamp_seconds", "ratio", "info", "requests", "connections", "items"})
_WORD = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

# Seconds; from sub-millisecond admissions up to the API server's 10 s webhook timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def name(area: str, what: str, unit: str) -> str:
    """``autocrane_<area>_<what>_<unit>``, refusing names that break the rule."""
    for part, value in (("area", area), ("what", what)):
        if not _WORD.fullmatch(value):
            raise ValueError(f"metric {part} must be snake case ([a-z][a-z0-9_]*), not {value!r}")
    if unit != "total" and unit not in UNITS:
        raise ValueError(f"metric unit must be 'total' or one of {', '.join(sorted(UNITS))}, not {unit!r}")
    if what.endswith(f"_{unit}"):
        raise ValueError(f"metric what {what!r} already ends with its unit {unit!r}")
    return f"autocrane_{area}_{what}_{unit}"


def counter(area: str, what: str, documentation: str, labels: Sequence[str] = ()) -> prometheus_client.Counter:
    """A counter named ``autocrane_<area>_<what>_total``."""
    # prometheus_client appends `_total` to counters itself and strips it when given.
    return prometheus_client.Counter(name(area, what, "total"), documentation, labels, registry=REGISTRY)


def gauge(area: str, what: str, unit: str, documentation: str,
          labels: Sequence[str] = ()) -> prometheus_client.Gauge:
    return prometheus_client.Gauge(name(area, what, unit), documentation, labels, registry=REGISTRY)


def histogram(area: str, what: str, unit: str, documentation: str, labels: Sequence[str] = (),
              buckets: Sequence[float] = LATENCY_BUCKETS) -> prometheus_client.Histogram:
    return prometheus_client.Histogram(name(area, what, unit), documentation, labels, registry=REGISTRY,
                                       buckets=buckets)


async def endpoint(request: Request) -> Response:
    """The current values of :data:`REGISTRY` in the format the scraper asked for."""
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(REGISTRY), media_type=content_type)


def route(path: str = "/metrics") -> Route:
    return Route(path, endpoint, methods=["GET"], name="metrics")
