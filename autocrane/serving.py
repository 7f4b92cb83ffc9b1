"""Run several ASGI apps under uvicorn in one asyncio loop, and stop them gracefully.

A program such as the webhook serves two apps: the admission app over TLS and a plain-HTTP app
for ``/livez``, ``/readyz`` and ``/metrics`` on another port (so the kubelet and Prometheus never
need the serving certificate). :class:`Serving` starts one ``uvicorn.Server`` per :class:`Site`
in the current loop and stops them together.

Why not ``uvicorn.Server.serve`` as is: it installs process-wide signal handlers per server
(two servers fight over SIGTERM) and exits the process from inside a task when a port is taken.
So the sockets are bound here first (a taken port is an ``OSError`` at :meth:`Serving.start`, and
port 0 gives a free port, which tests read back from :meth:`Serving.port`), signal handling is
ours (:func:`run`), and uvicorn is only asked to serve already-bound sockets.

Shutdown, on SIGTERM/SIGINT or :meth:`Serving.stop`: ``on_stopping`` callbacks run first (the
webhook fails ``/readyz`` then), the servers keep serving for ``drain_delay`` seconds while the
endpoint removal reaches the API server, then each stops accepting, closes idle keep-alive
connections, and lets in-flight requests finish (up to ``graceful_timeout``; longer ones are
cancelled). A second SIGINT forces the exit.

**Limits** (:class:`Limits`, per site): every program here can be reached by clients that are
not ours (the webhook by whoever reaches its Service, the in-pod servers by anything on the pod
network). uvicorn by itself has no deadline for a request's headers or body, so a client that
sends one byte every few seconds held a connection for as long as it liked, and no cap on open
connections. Here each connection must send complete request headers within
``header_timeout`` seconds of opening (or of the first byte of its next request), and the whole
body within ``body_timeout`` seconds after them; otherwise it is closed (a 408 when no request
was read yet). Request line and headers are at most ``max_header_bytes`` (a 431 beyond). At most
``max_connections`` connections are open at once: a connection beyond gets a 503 and is closed
at once, so the others keep their memory (uvicorn's ``limit_concurrency`` refuses requests, not
connections; set one above, it bounds the requests in flight, also those whose client left). Idle keep-alive
connections are closed after ``keep_alive`` seconds. Slow or abandoning clients are logged as
one warning line, at most one per ``header_timeout`` per site with the count of the others; a
client that goes away in the middle of a request body is a warning, not an error traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
import typing
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from autocrane import errors, inpod

log = logging.getLogger(__name__)
_TIMED_OUT = "autocrane.timed_out"
"""Scope key set when a request's body was cut off by the body timeout (it was logged then)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold of a server (see the module docstring)."""

    header_timeout: float = 10.0
    """Seconds from a connection's start (or its next request's first byte) to the end of the headers."""
    body_timeout: float = 10.0
    """Seconds from the end of the headers to the end of the body."""
    keep_alive: int = 30
    """Seconds an idle keep-alive connection is kept."""
    max_connections: int = 256
    """Connections open at once; one more gets a 503 and is closed."""
    max_header_bytes: int = 16 << 10
    """Request line and headers together."""


IN_POD = Limits(keep_alive=5, max_connections=64)
"""The in-pod servers (datadeployer, watchdoghealthz, testworkload): the kubelet and the controller
are their only clients, and the pod's memory is the app's."""


@dataclass(frozen=True, slots=True)
class Site:
    """One app on one address."""

    name: str
    """Used in logs and in :meth:`Serving.port`."""
    app: ASGIApp
    host: str = "0.0.0.0"
    port: int = 0
    """0 picks a free port (tests)."""
    ssl_context: ssl.SSLContext | None = None
    """Served as is: the same object is used for every handshake, so changing its certificate
    (``load_cert_chain``) changes what new connections get. None serves plain HTTP."""
    limits: Limits = field(default_factory=Limits)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`run` and reports when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


class _Throttled:
    """A warning per event, at most one per ``every`` seconds for each message; the next one counts
    those left out meanwhile (a flood of slow clients is a few lines, not one per connection)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._next_at: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warning(self, message: str, **fields: object) -> None:
        now = time.monotonic()
        if now < self._next_at.get(message, 0.0):
            self._left_out[message] = self._left_out.get(message, 0) + 1
            return
        self._next_at[message] = now + self.every
        more = self._left_out.pop(message, 0)
        log.warning(message, extra={**fields, **({"similar_not_logged": more} if more else {})})


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and the connection cap it lacks (one subclass per site)."""

    site: ClassVar[str] = ""
    limits: ClassVar[Limits] = Limits()
    slow: ClassVar[_Throttled] = _Throttled(10.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        """Bytes of the request being read so far, until its headers are complete: their size is
        checked here (h11's own limit applies only while they are incomplete)."""
        self._head_tail = b""
        """The last 3 of them, so a CRLFCRLF split across two reads is found without keeping the rest."""

    @classmethod
    def for_site(cls, site: Site) -> type[_Protocol]:
        return type(f"_Protocol_{site.name}", (cls,), {"site": site.name, "limits": site.limits,
                                                       "slow": _Throttled(site.limits.header_timeout)})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio hands a TCP protocol a Transport; uvicorn's signature says so, narrower than asyncio's.
        transport = typing.cast(asyncio.Transport, transport)
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self.slow.warning("refused a connection: too many open", site=self.site,
                              max_connections=self.limits.max_connections)
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain"
                            b"\r\nContent-Length: 21\r\n\r\ntoo many connections\n")
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadlines()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            if self._header_deadline is None:
                self._arm_header_deadline()  # the first bytes of a next request on a kept-alive connection
            window = self._head_tail + data
            end = window.find(b"\r\n\r\n")
            size = self._head_bytes - len(self._head_tail) + (end + 4 if end >= 0 else len(window))
            self._head_bytes, self._head_tail = self._head_bytes + len(data), window[-3:]
            if size > self.limits.max_header_bytes:
                self._refuse(b"431 Request Header Fields Too Large",
                             f"refused a request: headers over {self.limits.max_header_bytes} bytes")
                return
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()  # a pipelined request may have been read just now

    def _follow_request(self) -> None:
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._head_bytes, self._head_tail = 0, b""
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
        if state is h11.SEND_BODY:
            if self._body_deadline is None:
                self._body_deadline = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)
        elif self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self.limits.header_timeout, self._headers_timed_out)

    def _cancel_deadlines(self) -> None:
        for deadline in (self._header_deadline, self._body_deadline):
            if deadline is not None:
                deadline.cancel()
        self._header_deadline = self._body_deadline = None

    def _client(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"

    def _refuse(self, status: bytes, why: str) -> None:
        """Answer ``status`` outside h11 (no request was read) and close."""
        self._cancel_deadlines()
        if self.transport.is_closing():
            return
        self.slow.warning(why, site=self.site, client=self._client())
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.transport.close()

    def _headers_timed_out(self) -> None:
        self._header_deadline = None
        self._refuse(b"408 Request Timeout",
                     f"closed a connection: no complete request headers within {self.limits.header_timeout:g}s")

    def _body_timed_out(self) -> None:
        self._body_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None:
            typing.cast(dict[str, Any], self.cycle.scope)[_TIMED_OUT] = True  # our own key in the ASGI scope
        self.slow.warning(f"closed a connection: request body not complete within {self.limits.body_timeout:g}s",
                          site=self.site, client=self._client(),
                          path=self.scope.get("path") if self.scope else None)
        self.transport.close()


class _Disconnects:
    """ASGI middleware: a client that leaves in the middle of its request body is one warning line.

    Starlette raises ``ClientDisconnect`` from ``request.body()``; uncaught, uvicorn logged it as an
    "Exception in ASGI application" traceback at ERROR, once per abandoned upload.
    """

    def __init__(self, app: ASGIApp, site: str) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            if not scope.get(_TIMED_OUT):  # a timeout was logged when the connection was closed
                log.warning("client went away before sending the whole request", extra={
                    "site": self.site, "method": scope.get("method"), "path": scope.get("path"),
                    "client": f"{scope['client'][0]}:{scope['client'][1]}" if scope.get("client") else None})


class BodyTooLarge(errors.AutocraneError, ValueError):
    """A request body is larger than its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit

    def response(self) -> Response:
        """413, closing the connection (the rest of the body is not read)."""
        return PlainTextResponse(f"{self}\n", 413, headers={"Connection": "close"})


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read only while it stays within ``limit`` bytes; BodyTooLarge otherwise
    (at once when ``Content-Length`` says so, before reading anything)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port)."""
    # proto must be IPPROTO_TCP, not 0 as socket.create_server leaves it: asyncio sets TCP_NODELAY
    # only on accepted sockets whose proto says TCP, and without it Nagle's algorithm holds back the
    # response body (a second small write after the headers) until the client's delayed ACK, ~40 ms.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Serving:
    """Uvicorn servers for ``sites``, started and stopped together in the running loop."""

    def __init__(self, sites: Sequence[Site], *, graceful_timeout: float = 25.0, drain_delay: float = 0.0) -> None:
        if len({site.name for site in sites}) != len(sites):
            raise ValueError("site names must be unique")
        self.sites = tuple(sites)
        self.graceful_timeout = graceful_timeout
        self.drain_delay = drain_delay
        self.on_stopping: list[Callable[[], None]] = []
        self._servers: dict[str, _Server] = {}
        self._ports: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_requested = asyncio.Event()
        self._stopper: asyncio.Task[None] | None = None

    def _config(self, site: Site) -> uvicorn.Config:
        context = site.ssl_context
        return uvicorn.Config(
            _Disconnects(site.app, site.name), host=site.host, port=self._ports[site.name],
            # The context is handed over as is (not rebuilt from files by uvicorn), so whoever owns
            # it can reload the certificate in place; see webhook/tls.py.
            ssl_context_factory=(lambda _config, _default: context) if context is not None else None,
            log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=int(self.graceful_timeout),
            # h11 always (not httptools, whichever is installed): the deadlines live in its protocol.
            http=_Protocol.for_site(site), h11_max_incomplete_event_size=site.limits.max_header_bytes,
            # Connections are capped at accept (_Protocol): uvicorn's limit_concurrency counts them but
            # refuses only requests, never a connection that sends none. One above the cap, it still
            # bounds request tasks, which outlive a client that left.
            timeout_keep_alive=site.limits.keep_alive, limit_concurrency=site.limits.max_connections + 1,
        )

    async def start(self) -> None:
        """Bind every site and return once all of them accept connections."""
        sockets = []
        try:
            for site in self.sites:
                sock = listen(site.host, site.port)
                sockets.append(sock)
                self._ports[site.name] = sock.getsockname()[1]
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        for site, sock in zip(self.sites, sockets, strict=True):
            server = _Server(self._config(site))
            self._servers[site.name] = server
            self._tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"serve-{site.name}"))
        listening = asyncio.gather(*(server.listening.wait() for server in self._servers.values()))
        ended = asyncio.create_task(asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED))
        either: list[asyncio.Future[Any]] = [listening, ended]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():  # a server ended before it listened: stop the others, surface its error
            listening.cancel()
            await self._abort()
            for task in self._tasks:
                if task.done() and not task.cancelled():
                    task.result()  # raises the server's error, if it had one
            raise RuntimeError("a server stopped during startup")
        ended.cancel()
        for site in self.sites:
            scheme = "https" if site.ssl_context else "http"
            log.info("serving %s", site.name, extra={"url": f"{scheme}://{site.host}:{self._ports[site.name]}"})

    def port(self, name: str) -> int:
        return self._ports[name]

    @property
    def ports(self) -> dict[str, int]:
        """Bound ports by site name (empty until :meth:`start` has bound them)."""
        return dict(self._ports)

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def stop(self) -> None:
        """Begin the graceful shutdown (idempotent; safe from a signal handler)."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        self._stopper = asyncio.get_running_loop().create_task(self._stop())

    def force(self) -> None:
        """Stop now: cancel in-flight requests instead of waiting for them."""
        for server in self._servers.values():
            server.should_exit = server.force_exit = True

    async def _stop(self) -> None:
        for callback in self.on_stopping:
            try:
                callback()
            except Exception:
                log.exception("on_stopping callback failed")
        if self.drain_delay > 0:
            log.info("draining: still serving for %.1f s before closing", self.drain_delay)
            await asyncio.sleep(self.drain_delay)
        for server in self._servers.values():
            server.should_exit = True

    async def _abort(self) -> None:
        self.force()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self) -> None:
        """Until every server has stopped; raises the first server's error, if any.

        Cancelled, it stops the servers at once (in-flight requests are cut) and waits for them: a
        server cancelled in its own loop never closes its listening socket.
        """
        try:
            if self._tasks:
                await asyncio.wait(self._tasks)  # unlike gather, cancelling this wait leaves them to stop
        except asyncio.CancelledError:
            self.force()
            await asyncio.wait(self._tasks)
            raise
        finally:
            if self._stopper is not None:
                await self._stopper
        for task in self._tasks:
            task.result()  # the first server's error, if one had one

    async def __aenter__(self) -> Serving:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        await self.wait()


async def run(serving: Serving, *, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; a second SIGINT forces it."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if serving.stopping:
            if signum == signal.SIGINT:
                log.warning("second interrupt: stopping without waiting for in-flight requests")
                serving.force()
            return
        log.info("received %s: shutting down gracefully", signal.Signals(signum).name)
        serving.stop()

    await serving.start()
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await serving.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


Liveness = Callable[[], str | None]
"""Why a program is not alive any more (a loop it depends on stopped), or None while it is."""


def livez_route(path: str = inpod.LIVEZ_PATH, alive: Liveness | None = None) -> Route:
    """``GET /livez``: 200 while the event loop runs and ``alive()`` (if given) has no complaint;
    else 503 with the complaint, so the kubelet restarts a container whose work stopped."""
    async def livez(_: Request) -> PlainTextResponse:
        problem = alive() if alive is not None else None
        return PlainTextResponse(f"{problem}\n" if problem else "ok\n", 503 if problem else 200)

    return Route(path, livez, methods=["GET"], name="livez")
