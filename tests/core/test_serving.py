"""Several apps under uvicorn in one loop: separate ports, graceful stop that drains in-flight requests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from autocrane import serving
from tests import waiting


def _app(text: str, gate: asyncio.Event | None = None, entered: asyncio.Event | None = None) -> Starlette:
    async def handler(_: Request) -> Response:
        if entered is not None:
            entered.set()
        if gate is not None:
            await gate.wait()
        return PlainTextResponse(text)

    return Starlette(routes=[Route("/", handler)])


async def _refuses(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


def test_each_site_gets_its_own_port() -> None:
    async def scenario() -> None:
        sites = [serving.Site("one", _app("one"), "127.0.0.1"), serving.Site("two", _app("two"), "127.0.0.1")]
        async with serving.Serving(sites) as running, httpx.AsyncClient() as http:
            assert running.port("one") != running.port("two")
            for name in ("one", "two"):
                assert (await http.get(f"http://127.0.0.1:{running.port(name)}/")).text == name

    asyncio.run(scenario())


def test_stopping_lets_an_in_flight_request_finish_and_refuses_new_connections() -> None:
    async def scenario() -> None:
        gate, entered = asyncio.Event(), asyncio.Event()
        running = serving.Serving([serving.Site("slow", _app("done", gate, entered), "127.0.0.1")])
        await running.start()
        port = running.port("slow")
        async with httpx.AsyncClient() as http:
            request = asyncio.create_task(http.get(f"http://127.0.0.1:{port}/"))
            await entered.wait()
            stopped: list[str] = []
            running.on_stopping.append(lambda: stopped.append("readiness off"))
            running.stop()
            await waiting.eventually("the port to refuse connections", lambda: _refuses(port))
            assert not request.done()
            gate.set()
            response = await request
        await running.wait()
        assert response.status_code == 200 and response.text == "done"
        assert stopped == ["readiness off"]

    asyncio.run(scenario())


def test_the_drain_delay_keeps_serving_after_stop_is_asked() -> None:
    async def scenario() -> None:
        running = serving.Serving([serving.Site("app", _app("still here"), "127.0.0.1")], drain_delay=0.5)
        await running.start()
        running.stop()
        assert running.stopping
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{running.port('app')}/")).text == "still here"
        await running.wait()

    asyncio.run(scenario())


def test_listening_sockets_say_tcp_so_asyncio_turns_nagle_off_on_connections() -> None:
    # asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP; with Nagle on,
    # every response body waits ~40 ms for the client's delayed ACK.
    with serving.listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        with socket.create_connection(sock.getsockname()):
            accepted, _ = sock.accept()
            with accepted:
                asyncio.run(_nodelay_after_asyncio_wraps(accepted))


async def _nodelay_after_asyncio_wraps(accepted: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, accepted.dup())
    try:
        raw = transport.get_extra_info("socket")
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        transport.close()


def test_a_taken_port_is_an_error_at_start() -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError):
                await serving.Serving([serving.Site("app", _app("x"), "127.0.0.1", port)]).start()

    asyncio.run(scenario())


def test_sigterm_stops_every_site_gracefully() -> None:
    async def scenario() -> None:
        sites = [serving.Site("a", _app("a"), "127.0.0.1"), serving.Site("b", _app("b"), "127.0.0.1")]
        running = serving.Serving(sites)
        before = signal.getsignal(signal.SIGTERM)
        task = asyncio.create_task(serving.run(running))

        async def handled() -> bool:
            # serving.run installs its handler after the sites listen: a SIGTERM sent before that
            # (as soon as a connect succeeds) would end this test process, and the whole run.
            return signal.getsignal(signal.SIGTERM) is not before

        await waiting.eventually("serving.run's SIGTERM handler", handled)
        assert not await _refuses(running.port("a")) and not await _refuses(running.port("b"))
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, timeout=10)
        assert await _refuses(running.port("a")) and await _refuses(running.port("b"))

    asyncio.run(scenario())
