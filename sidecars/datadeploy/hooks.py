"""Telling the app that new data is live, without restarting it.

After a swap the datadeployer POSTs JSON to a URL on localhost::

    {"name": "models", "version": "20260102T030405Z-1a2b3c4d5e6f", "sha256": "...", "path": "/data/models"}

with headers ``X-Autocrane-Data-Set`` and ``X-Autocrane-Data-Version``. Like git-sync's
webhooks, delivery is at-least-once and runs after the swap, apart from the sync loop:

- **retried** with exponential backoff until the app answers 2xx;
- **coalesced**: each data set has a one-slot mailbox, so a slow app is told only the newest
  version (it may never hear of an intermediate one);
- **idempotent on the app's side**: the same version may be announced more than once (every
  start of the sidecar announces the versions already live), so the app should reload only
  when the version differs from what it has.

Only loopback URLs are accepted: the hook talks to the pod's own app, never elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class HookError(ValueError):
    """The notify URL is not an http URL on loopback."""


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise HookError(f"--notify-url {url!r}: expected http://127.0.0.1:PORT/PATH (loopback only)")
    return url


def post(url: str, payload: dict[str, Any], timeout: float = 10.0) -> None:
    """One delivery; raises on anything but 2xx."""
    body = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "X-Autocrane-Data-Set": str(payload["name"]),
        "X-Autocrane-Data-Version": str(payload["version"]),
    })
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


class Notifier:
    """Per data set, delivers the newest announcement until it succeeds."""

    def __init__(self, url: str, initial: float = 0.5, maximum: float = 60.0) -> None:
        self.url = check_url(url)
        self.initial, self.maximum = initial, maximum
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.delivered: dict[str, str] = {}
        """Data set -> last version the app acknowledged (for status and tests)."""

    def announce(self, payload: dict[str, Any]) -> None:
        """Queue ``payload`` for its data set, replacing any undelivered one. Call from the event loop."""
        name = str(payload["name"])
        self._pending[name] = payload
        self._wake.setdefault(name, asyncio.Event()).set()
        if name not in self._tasks or self._tasks[name].done():
            self._tasks[name] = asyncio.create_task(self._deliver(name), name=f"notify-{name}")

    async def _deliver(self, name: str) -> None:
        wake, delay = self._wake[name], self.initial
        while name in self._pending:
            wake.clear()
            payload = self._pending[name]
            try:
                await asyncio.to_thread(post, self.url, payload)
            except (OSError, urllib.error.URLError) as error:
                log.warning("notify %s of %s %s failed: %s; retrying in %.1fs",
                            self.url, name, payload["version"], error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)  # a newer version skips the wait
                delay = min(self.maximum, delay * 2)
                continue
            log.info("notified %s: %s is at version %s", self.url, name, payload["version"])
            self.delivered[name] = str(payload["version"])
            delay = self.initial
            if self._pending.get(name) is payload:
                del self._pending[name]

    async def idle(self) -> None:
        """Wait until every queued announcement is delivered (for tests and shutdown)."""
        while tasks := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*tasks)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
