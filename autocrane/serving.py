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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


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
            site.app, host=site.host, port=self._ports[site.name],
            # The context is handed over as is (not rebuilt from files by uvicorn), so whoever owns
            # it can reload the certificate in place; see webhook/tls.py.
            ssl_context_factory=(lambda _config, _default: context) if context is not None else None,
            log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=int(self.graceful_timeout), timeout_keep_alive=30,
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
        await asyncio.wait([listening, ended], return_when=asyncio.FIRST_COMPLETED)
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
        """Until every server has stopped; raises the first server's error, if any."""
        try:
            await asyncio.gather(*self._tasks)
        finally:
            if self._stopper is not None:
                await self._stopper

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


async def _livez(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


def livez_route(path: str = "/livez") -> Route:
    """``GET /livez``: 200 while the event loop runs (what a liveness probe needs to know)."""
    return Route(path, _livez, methods=["GET"], name="livez")
