"""Polling every source on its own schedule, each in its own thread.

A source's poll (git fetch, HTTP download, packing) is slow blocking I/O, so each source gets a
thread: a slow or failing source never delays another one. A failed poll is logged, counted
and recorded in the source's status; the next poll happens on schedule (after ``every``
seconds, doubled per consecutive failure up to 10 minutes).

Health (see docs/data-plane.md, "Readiness and liveness"):

- **ready** once every source has a version: polled successfully in this run, or kept on the
  volume from an earlier one. A source that never worked makes the repository unready, so a
  rollout or an install waits for it instead of pods failing to find their source.
- **stale**: a source without a successful poll for ``stale_after`` seconds (its upstream is
  down, its credentials expired). It stays ready and live: its versions are still right to
  serve, and a restart cannot fix an upstream. Stale sources show on ``/readyz``'s body, in the
  log and as ``autocrane_datarepository_source_stale_info``, for an alert.
- **wedged**: a poll still running after ``stale_after`` seconds. That is this process's
  fault (a read no timeout covers), so liveness fails and the kubelet restarts the container,
  which is what the C# repository did for any stale crawl.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from autocrane import backoff, metrics
from sidecars.datarepo import config, sources, store

log = logging.getLogger(__name__)
MAX_BACKOFF = 600.0

POLLS = metrics.counter("datarepository", "polls", "Source polls by result (new, unchanged, error).",
                        ["source", "result"])
VERSIONS = metrics.gauge("datarepository", "versions", "items", "Versions kept per source.", ["source"])
STALE = metrics.gauge("datarepository", "source_stale", "info", "1 while a source has had no successful poll "
                      "for --stale-after seconds.", ["source"])
LAST_SUCCESS = metrics.gauge("datarepository", "last_success", "timestamp_seconds",
                             "When a source was last polled successfully (POSIX seconds).", ["source"])
POLL_SECONDS = metrics.histogram("datarepository", "poll_duration", "seconds", "Time of one poll, packing included.",
                                 ["source"], buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800))


@dataclasses.dataclass(slots=True)
class PollStatus:
    polls: int = 0
    last_poll: dt.datetime | None = None
    last_success: dt.datetime | None = None
    last_error: str | None = None
    failures: int = 0
    """Consecutive failed polls."""
    running_since: float | None = None
    """Monotonic time the poll in progress started, if one is."""
    succeeded_at: float | None = None
    """Monotonic time of the last successful poll (``last_success`` is wall-clock, for people)."""
    stale: bool = False

    def to_json(self) -> dict[str, object]:
        def time(value: dt.datetime | None) -> str | None:
            return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")

        return {"polls": self.polls, "lastPoll": time(self.last_poll), "lastSuccess": time(self.last_success),
                "lastError": self.last_error, "consecutiveFailures": self.failures, "stale": self.stale}


DEFAULT_STALE_AFTER = 1800.0


class Poller:
    def __init__(self, repo: store.Store, configured: list[config.Source], *,
                 stale_after: float = DEFAULT_STALE_AFTER, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = repo
        self.sources = {s.name: s for s in configured}
        self.status = {s.name: PollStatus() for s in configured}
        self.stale_after = stale_after
        self._monotonic = monotonic
        self._since = monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def poll(self, name: str) -> bool:
        """Poll one source now; True when it produced a new version. Never raises."""
        source, state = self.sources[name], self.status[name]
        started = state.running_since = self._monotonic()
        try:
            snapshot = sources.poll(source, self.store.work(name), self.store.last_origin(name))
            version = None if snapshot is None else self.store.add(name, snapshot, source.keep)
        except Exception as error:  # one source's failure, whatever it is, must not stop its thread
            state.failures += 1
            state.last_error = f"{type(error).__name__}: {error}" if not isinstance(
                error, sources.SourceError) else str(error)
            log.error("source %s: poll failed: %s", name, state.last_error)
            POLLS.labels(name, "error").inc()
            failed = True
        else:
            failed = False
        finally:
            state.polls += 1
            state.last_poll = store.utcnow()
            state.running_since = None
            POLL_SECONDS.labels(name).observe(self._monotonic() - started)
        if failed:
            self.check_stale(name)
            return False
        state.failures, state.last_error, state.last_success = 0, None, state.last_poll
        state.succeeded_at = self._monotonic()
        LAST_SUCCESS.labels(name).set(state.last_success.timestamp())
        self.check_stale(name)
        manifest = self.store.manifest(name)
        VERSIONS.labels(name).set(len(manifest.versions) if manifest else 0)
        if version is None:
            POLLS.labels(name, "unchanged").inc()
            return False
        POLLS.labels(name, "new").inc()
        log.info("source %s: new version %s (%d bytes, sha256 %s)", name, version.version, version.size,
                 version.sha256)
        return True

    def ready(self) -> bool:
        """Every source has a version: polled successfully in this run, or kept from a previous one."""
        return not self.unready()

    def unready(self) -> list[str]:
        """The sources without any version yet."""
        return [n for n in self.sources if not (self.status[n].last_success or self._has_versions(n))]

    def _has_versions(self, name: str) -> bool:
        manifest = self.store.manifest(name)
        return manifest is not None and bool(manifest.versions)

    def check_stale(self, name: str) -> bool:
        """Update and return whether ``name`` has had no successful poll for ``stale_after`` seconds."""
        state = self.status[name]
        since = state.succeeded_at if state.succeeded_at is not None else self._since
        stale = self._monotonic() - since > self.stale_after
        if stale != state.stale:
            state.stale = stale
            if stale:
                log.error("source %s: no successful poll for %.0fs (stale); still serving its versions: %s",
                          name, self.stale_after, state.last_error or "no poll finished")
            else:
                log.info("source %s: polled successfully again; no longer stale", name)
        STALE.labels(name).set(1 if stale else 0)
        return stale

    def health(self) -> dict[str, object]:
        """``/readyz``'s body: ready, the sources not ready or stale, and each source's polls."""
        for name in self.sources:
            self.check_stale(name)
        return {"ready": self.ready(), "unready": self.unready(),
                "stale": sorted(n for n, s in self.status.items() if s.stale),
                "sources": {n: s.to_json() for n, s in sorted(self.status.items())}}

    def wedged(self) -> str | None:
        """Why liveness should fail: a poll that has run longer than ``stale_after``; else None."""
        now = self._monotonic()
        stuck = sorted(n for n, s in self.status.items()
                       if s.running_since is not None and now - s.running_since > self.stale_after)
        if not stuck:
            return None
        return f"polls running for over {self.stale_after:.0f}s (wedged): {', '.join(stuck)}"

    def start(self) -> None:
        for name in self.sources:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"poll-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, name: str) -> None:
        every = self.sources[name].every
        retrying = backoff.Backoff(min(2 * every, MAX_BACKOFF), MAX_BACKOFF)  # the first retry: twice the period
        while not self._stop.is_set():
            self.poll(name)
            failures = self.status[name].failures
            self._stop.wait(retrying.delay(failures) if failures else every)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
