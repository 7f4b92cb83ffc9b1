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

Only ``http`` to a loopback IP literal is accepted (``127.0.0.0/8`` or ``[::1]``; not a name such
as ``localhost``, whose address the resolver decides): the hook talks to the pod's own app,
never elsewhere. The URL is parsed once, by :func:`check_url`, and the delivery connects to the
host and port that check saw and sends the path it saw: there is no second parser to disagree
with the first (``http://user@127.0.0.1:9/x`` passed a check on ``hostname`` while urllib took
``user@127.0.0.1:9`` as the host). Userinfo, a fragment, ports outside 1-65535 and any control
character, space or non-ASCII character are refused at start, not at the first delivery. No proxy is ever used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import ipaddress
import json
import logging
import urllib.parse
from typing import Any

from autocrane import backoff, errors, untrusted

log = logging.getLogger(__name__)
FORM = "http://127.0.0.1:PORT/PATH (an IP literal on loopback)"


class HookError(errors.AutocraneError, ValueError):
    """The notify URL is not an http URL on a loopback IP literal."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where a notification goes, exactly as checked."""

    host: str
    """A loopback IP literal, without brackets."""
    port: int
    target: str
    """The request target: path and query, as given."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.target}"


def check_url(url: str) -> Target:
    """Parse ``--notify-url`` once; a HookError naming the flag and the expected form for anything else."""
    def refuse(why: str) -> HookError:
        return HookError(f"--notify-url {untrusted.shown(url)}: {why}; expected {FORM}")

    if not isinstance(url, str) or not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise refuse("only printable ASCII without spaces (percent-encode the rest)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise refuse("only http is delivered")
    if "@" in parts.netloc:
        raise refuse("user information is not allowed")
    if parts.fragment or url.endswith("#"):
        raise refuse("a fragment is not sent")
    try:
        address = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        raise refuse("the host must be an IP literal (loopback only)") from None
    if not address.is_loopback:
        raise refuse("the host is not loopback (loopback only)")
    try:
        port = 80 if parts.port is None else parts.port
    except ValueError:
        raise refuse("the port must be a number between 1 and 65535") from None
    if not 0 < port < 65536:
        raise refuse(f"port {port} is not between 1 and 65535")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Target(str(address), port, target)


def post(target: Target, payload: dict[str, Any], timeout: float = 10.0) -> None:
    """One delivery to exactly ``target``; raises on anything but 2xx."""
    body = json.dumps(payload).encode()
    connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        connection.request("POST", target.target, body=body, headers={
            "Content-Type": "application/json",
            "X-Autocrane-Data-Set": str(payload["name"]),
            "X-Autocrane-Data-Version": str(payload["version"]),
        })
        response = connection.getresponse()
        response.read(1 << 16)
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status} {response.reason}")
    finally:
        connection.close()


class Notifier:
    """Per data set, delivers the newest announcement until it succeeds."""

    def __init__(self, url: str, initial: float = 0.5, maximum: float = 60.0) -> None:
        self.url = check_url(url)
        """The checked target (its ``str()`` is the URL)."""
        self.backoff = backoff.Backoff(min(initial, maximum), maximum)
        """Waits between failed deliveries of one data set's announcement."""
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
        wake, failures = self._wake[name], 0
        while name in self._pending:
            wake.clear()
            payload = self._pending[name]
            try:
                await asyncio.to_thread(post, self.url, payload)
            except Exception as error:  # OSError, http.client's errors, or a bug: retried either way
                failures += 1
                delay = self.backoff.delay(failures)
                log.warning("notify %s of %s %s failed: %s; retrying in %.1fs",
                            self.url, name, payload["version"], error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)  # a newer version skips the wait
                continue
            log.info("notified %s: %s is at version %s", self.url, name, payload["version"])
            self.delivered[name] = str(payload["version"])
            failures = 0
            if self._pending.get(name) is payload:
                del self._pending[name]

    async def idle(self) -> None:
        """Wait until every queued announcement is delivered (for tests and shutdown)."""
        while tasks := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*tasks)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
