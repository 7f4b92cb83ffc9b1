"""What the datadeployer reports: per data set, the acknowledged version, its time, the last error.

The controller reads ``GET /status`` when it probes the pod: that is the acknowledgement, and
``deployedAt`` is when the version went live (so bake time is measured from real deployment).
``GET /synced`` is 200 once every declared data set is present in the requested version (or,
without a request, in any verified version): the startupProbe of the native-sidecar mode.
``GET /watchdog`` reports error once a data set has been failing for longer than the threshold,
so data problems surface as a watchdog (``probe.autocrane.io/datadeployer``).
``GET /metrics`` is Prometheus' (:mod:`sidecars.datadeploy.metrics`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from autocrane import clock, inpod, manifests, metrics, serving


@dataclasses.dataclass(slots=True)
class SetStatus:
    """The state of one data set, as last observed by the sync loop."""

    name: str
    source: str = ""
    requested: str | None = None
    """Version asked for by the controller (or chosen as fallback)."""
    fallback: bool = False
    """True when ``requested`` is the repository's last known good, for want of a request."""
    version: str | None = None
    """Acknowledged: the version published at ``<root>/<name>``."""
    sha256: str | None = None
    deployed_at: dt.datetime | None = None
    error: str | None = None
    error_at: dt.datetime | None = None
    failing_since: dt.datetime | None = None
    """Start of the current run of failures; None once a sync succeeds."""

    def to_json(self) -> inpod.SetReport:
        return inpod.set_report(source=self.source, requested=self.requested, fallback=self.fallback,
                                version=self.version, sha256=self.sha256, deployed_at=self.deployed_at,
                                error=self.error, error_at=self.error_at, failing_since=self.failing_since)


class Status:
    """Shared between the sync tasks (writers) and the HTTP endpoints (readers); one event loop."""

    def __init__(self, failure_threshold: float = 300.0, time: clock.Clock = clock.SYSTEM) -> None:
        self.sets: dict[str, SetStatus] = {}
        self.annotations_error: str | None = None
        self.failure_threshold = failure_threshold
        self.clock = time

    def get(self, name: str) -> SetStatus:
        return self.sets.setdefault(name, SetStatus(name))

    def succeeded(self, name: str, version: str, sha256: str, deployed_at: dt.datetime) -> None:
        entry = self.get(name)
        entry.version, entry.sha256, entry.deployed_at = version, sha256, deployed_at
        entry.error = entry.error_at = entry.failing_since = None

    def failed(self, name: str, error: str) -> None:
        entry, now = self.get(name), clock.utcnow(self.clock)
        entry.error, entry.error_at = error, now
        entry.failing_since = entry.failing_since or now

    def synced(self) -> tuple[bool, list[str]]:
        """Whether every declared set is present as requested, and the ones that are not."""
        waiting = [s.name for s in self.sets.values()
                   if s.version is None or (s.requested is not None and s.version != s.requested)]
        return not waiting, waiting

    def watchdog(self) -> tuple[str, str]:
        """(level, message) for the watchdog endpoint."""
        now = clock.utcnow(self.clock)
        failing = [s for s in self.sets.values() if s.failing_since is not None]
        late = [s for s in failing if s.failing_since is not None
                and (now - s.failing_since).total_seconds() >= self.failure_threshold]
        if late:
            return "error", "; ".join(f"{s.name} failing since {manifests.format_time(s.failing_since)}: {s.error}"
                                      for s in late if s.failing_since)
        if failing or self.annotations_error:
            return "warning", "; ".join([f"{s.name}: {s.error}" for s in failing]
                                        + ([self.annotations_error] if self.annotations_error else []))
        return "info", "ok"

    def to_json(self) -> inpod.StatusReport:
        return {"sets": {name: s.to_json() for name, s in sorted(self.sets.items())},
                "annotationsError": self.annotations_error}


def app(status: Status, alive: serving.Liveness | None = None) -> Starlette:
    """The datadeployer's HTTP API; ``/livez`` fails once ``alive()`` says why (the follow loop stopped)."""

    async def get_status(request: Request) -> Response:
        return JSONResponse(status.to_json())

    async def synced(request: Request) -> Response:
        ok, waiting = status.synced()
        return PlainTextResponse("synced" if ok else f"waiting for: {', '.join(waiting)}", 200 if ok else 503)

    async def watchdog(request: Request) -> Response:
        level, message = status.watchdog()
        return PlainTextResponse(f"{level}: {message}", 500 if level == "error" else 200)

    return Starlette(routes=[Route(inpod.STATUS_PATH, get_status), Route(inpod.SYNCED_PATH, synced),
                             Route(inpod.WATCHDOG_PATH, watchdog), serving.livez_route(alive=alive),
                             metrics.route(inpod.METRICS_PATH)])
