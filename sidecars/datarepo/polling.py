"""Polling every source on its own schedule, each in its own thread.

A source's poll (git fetch, HTTP download, packing) is slow blocking I/O, so each source gets a
thread: a slow or failing source never delays another one. A failed poll is logged, counted
and recorded in the source's status; the next poll happens on schedule (after ``every``
seconds, doubled per consecutive failure up to 10 minutes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time

from autocrane import backoff, metrics
from sidecars.datarepo import config, sources, store

log = logging.getLogger(__name__)
MAX_BACKOFF = 600.0

POLLS = metrics.counter("datarepository", "polls", "Source polls by result (new, unchanged, error).",
                        ["source", "result"])
VERSIONS = metrics.gauge("datarepository", "versions", "items", "Versions kept per source.", ["source"])
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

    def to_json(self) -> dict[str, object]:
        def time(value: dt.datetime | None) -> str | None:
            return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")

        return {"polls": self.polls, "lastPoll": time(self.last_poll), "lastSuccess": time(self.last_success),
                "lastError": self.last_error, "consecutiveFailures": self.failures}


class Poller:
    def __init__(self, repo: store.Store, configured: list[config.Source]) -> None:
        self.store = repo
        self.sources = {s.name: s for s in configured}
        self.status = {s.name: PollStatus() for s in configured}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def poll(self, name: str) -> bool:
        """Poll one source now; True when it produced a new version. Never raises."""
        source, state = self.sources[name], self.status[name]
        started = time.monotonic()
        try:
            snapshot = sources.poll(source, self.store.work(name), self.store.last_origin(name))
            version = None if snapshot is None else self.store.add(name, snapshot, source.keep)
        except Exception as error:  # one source's failure, whatever it is, must not stop its thread
            state.failures += 1
            state.last_error = f"{type(error).__name__}: {error}" if not isinstance(
                error, sources.SourceError) else str(error)
            log.error("source %s: poll failed: %s", name, state.last_error)
            POLLS.labels(name, "error").inc()
            return False
        finally:
            state.polls += 1
            state.last_poll = store.utcnow()
            POLL_SECONDS.labels(name).observe(time.monotonic() - started)
        state.failures, state.last_error, state.last_success = 0, None, state.last_poll
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
        """Every source has been polled once or already has versions from a previous run."""
        return all(self.status[n].polls or self.store.manifest(n) for n in self.sources)

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
