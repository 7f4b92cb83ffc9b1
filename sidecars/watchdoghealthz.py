"""``autocrane watchdoghealthz``: a readiness endpoint computed from the pod's own watchdog statuses.

The statuses (``status.autocrane.io/<name>`` annotations, written by the controller and by
``autocrane watchdog post``) are read from the downward-API annotations file, re-read whenever
its content changes (checked every ``--poll-seconds``): no API call, ever, and no RBAC.

``GET /healthz`` is 200 once the pod has had no error-level watchdog for ``min-ready-seconds``
(taken from ``--min-ready-seconds``, else from the pod's
``watchdoghealthz.autocrane.io/min-ready-seconds`` annotation, else 0), and 503 as soon as one
is in error, or when the file cannot be read. An unreadable status value counts as error.
Warnings and infos never make the pod unready. The clock restarts at every error, so a canary
whose watchdogs flap never becomes Ready. Unlike the C# original, the file is watched in the
background, so an error that comes and goes between two kubelet probes still resets the clock.

No annotation value can break either: an unreadable status counts as error, an unreadable
``min-ready-seconds`` as 0, and anything unexpected while reading them makes ``/healthz`` 503
(not ready: nobody can tell) and is logged once; the background watch carries on after it, and
``/livez`` fails should it ever stop.

``GET /metrics`` (Prometheus): ``autocrane_watchdoghealthz_ready_info`` (1 while ``/healthz``
would answer 200), ``autocrane_watchdoghealthz_readiness_flips_total{to}`` (changes of that
answer, seen by the background watch: a flapping canary shows here even between kubelet
probes) and ``autocrane_watchdoghealthz_error_watchdogs_items`` (watchdogs in error now).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from autocrane import clock, errors, inpod, keys, logs, metrics, podinfo, serving, untrusted, watchdogs

log = logging.getLogger(__name__)
DEFAULT_ANNOTATIONS = podinfo.ANNOTATIONS_PATH

READY = metrics.gauge("watchdoghealthz", "ready", "info", "1 while /healthz answers 200 (the pod may be Ready).")
FLIPS = metrics.counter("watchdoghealthz", "readiness_flips",
                        "Changes of the /healthz answer, by the answer it changed to (ready, unready).", ["to"])
ERRORS = metrics.gauge("watchdoghealthz", "error_watchdogs", "items",
                       "Watchdogs (or unreadable statuses) in error now.")
for _to in ("ready", "unready"):
    FLIPS.labels(_to)


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    """What the monitor knows; :func:`observe` and :func:`decide` are pure."""

    clean_since: float | None = None
    """Clock time of the first observation in the current error-free run; None while in error."""
    errors: tuple[str, ...] = ()
    """Why the pod is in error (watchdog names and messages), empty when clean."""


def observe(health: Health, pod_annotations: Mapping[str, str] | None, now: float) -> Health:
    """Fold one observation of the annotations (None: unreadable) into ``health``."""
    if pod_annotations is None:
        return Health(None, ("the pod's annotations file cannot be read",))
    found, problems = watchdogs.statuses(pod_annotations)
    failing = [f"{name}: {s.message}" for name, s in sorted(found.items()) if s.level is watchdogs.Level.ERROR]
    failing += [problem for _, problem in sorted(problems.items())]
    if failing:
        return Health(None, tuple(failing))
    return Health(health.clean_since if health.clean_since is not None else now, ())


def decide(health: Health, now: float, min_ready_seconds: float) -> tuple[bool, str]:
    """(ready, reason) at ``now``."""
    if health.clean_since is None:
        return False, "error: " + "; ".join(health.errors or ("no observation yet",))
    clean = now - health.clean_since
    if clean >= min_ready_seconds:
        return True, f"ok: no error watchdog for {clean:.0f}s"
    return False, f"waiting: no error watchdog for {clean:.0f}s of {min_ready_seconds:g}s"


class Monitor:
    """Holds the state between observations; the clock is injected (its monotonic seconds are used)."""

    def __init__(self, watcher: podinfo.Watcher, min_ready_seconds: float | None,
                 time: clock.Clock = clock.SYSTEM) -> None:
        self.watcher, self.fixed_min_ready, self.clock = watcher, min_ready_seconds, time
        self.health = Health()
        self.ready: bool | None = None
        """The answer at the last tick (None before the first), for the flips metric."""

        self._unexpected: dict[str, str] = {}
        """Per step (tick, decide), the unexpected error last logged: a repeating one is logged once."""

    @property
    def min_ready_seconds(self) -> float:
        if self.fixed_min_ready is not None:
            return self.fixed_min_ready
        value = self.watcher.annotations.get(keys.MIN_READY_SECONDS)
        try:
            return float(inpod.parse_min_ready_seconds(value)) if value else 0.0
        except (errors.AnnotationError, ValueError, OverflowError):  # e.g. 5000 digits: int() refuses them
            return 0.0

    def tick(self) -> None:
        """Observe the file once; an unexpected error counts as an error observation and is logged once."""
        before = self.health
        try:
            self.watcher.poll()
            readable = self.watcher.error is None
            self.health = observe(self.health, self.watcher.annotations if readable else None,
                                  self.clock.monotonic())
        except Exception as error:
            self.health = Health(None, (f"the watchdog statuses cannot be read: {self._report('tick', error)}",))
        else:
            self._unexpected.pop("tick", None)
        if bool(before.errors) != bool(self.health.errors) or before.errors != self.health.errors:
            log.info("watchdogs: %s", "; ".join(self.health.errors) or "no error")
        self._measure()

    def _measure(self) -> None:
        ready, _ = self.decide()
        if self.ready is not None and ready != self.ready:
            FLIPS.labels("ready" if ready else "unready").inc()
        self.ready = ready
        READY.set(1 if ready else 0)
        ERRORS.set(len(self.health.errors))

    def decide(self) -> tuple[bool, str]:
        try:
            answer = decide(self.health, self.clock.monotonic(), self.min_ready_seconds)
        except Exception as error:
            return False, f"error: cannot decide: {self._report('decide', error)}"
        self._unexpected.pop("decide", None)
        return answer

    def _report(self, step: str, error: Exception) -> str:
        said = f"{type(error).__name__}: {untrusted.shown(str(error), 200)}"
        if self._unexpected.get(step) != said:
            self._unexpected[step] = said
            log.error("unexpected error (logged once; not ready meanwhile): %s", said, exc_info=error)
        return said


def app(monitor: Monitor, alive: serving.Liveness | None = None) -> Starlette:
    async def healthz(request: Request) -> Response:
        monitor.tick()
        ready, reason = monitor.decide()
        return PlainTextResponse(reason, 200 if ready else 503)

    return Starlette(routes=[Route(inpod.HEALTHZ_PATH, healthz), serving.livez_route(alive=alive),
                             metrics.route(inpod.METRICS_PATH)])


async def watch(monitor: Monitor, poll: float) -> None:
    """Observe the file every ``poll`` seconds, for ever (:meth:`Monitor.tick` never raises)."""
    while True:
        monitor.tick()
        await asyncio.sleep(poll)


async def _run(monitor: Monitor, host: str, port: int, poll: float) -> None:
    task = asyncio.create_task(watch(monitor, poll), name="watch")

    def alive() -> str | None:
        return "the background watch of the annotations file stopped" if task.done() else None

    try:
        site = serving.Site("healthz", app(monitor, alive), host, port, limits=serving.IN_POD)
        await serving.run(serving.Serving([site], graceful_timeout=2))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="autocrane watchdoghealthz",
                                description="Serve /healthz from this pod's watchdog annotations (a readiness gate).")
    p.add_argument("--annotations-file", type=Path, default=Path(DEFAULT_ANNOTATIONS),
                   help=f"downward-API file of the pod's annotations (default {DEFAULT_ANNOTATIONS})")
    p.add_argument("--min-ready-seconds", type=float,
                   help="seconds without error before ready (default: the pod's min-ready-seconds annotation)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=inpod.WATCHDOGHEALTHZ_PORT,
                   help=f"port of /healthz, /livez and /metrics (default {inpod.WATCHDOGHEALTHZ_PORT}, the injector's)")
    p.add_argument("--poll-seconds", type=float, default=1.0, help="how often to re-check the annotations file")
    logs.add_arguments(p)
    args = p.parse_args(argv)
    logs.setup_from_arguments(args)
    monitor = Monitor(podinfo.Watcher(args.annotations_file), args.min_ready_seconds)
    asyncio.run(_run(monitor, args.host, args.port, args.poll_seconds))
    return 0
