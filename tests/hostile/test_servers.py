"""Slow and greedy clients against every server, as real processes on 127.0.0.1 (issue 8, defect 10),
and watchdoghealthz against hostile annotation values (defect 1).

One module-wide set of programs: the data repository, a datadeployer sidecar, watchdoghealthz,
the test workload and the webhook (TLS admission port and plain health port). The slow clients
are started together when the module starts, so the waits for the deadlines (10 s) overlap;
each test then reads its clients' results. Every client is bounded: at most 30 s and one byte
every 0.5 s, and the greedy ones open at most ``max_connections + 8`` connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import select
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from autocrane import clock, podinfo, serving
from devcluster import downwardapi
from sidecars import testworkload, watchdoghealthz
from tests.cluster import podkit
from tests.hostile import values
from tests.waiting import eventually, wait_until
from tests.webhook import tlstools

LIMITS, IN_POD = serving.Limits(), serving.IN_POD
BOUND = 30.0
"""No slow client lives longer than this."""


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    post_path: str
    """A path to send a slow body to."""
    limits: serving.Limits
    tls: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Outcome:
    closed_after: float | None
    """Seconds until the server closed the connection; None when it was still open at the bound."""
    answer: bytes


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)
    if server.tls is not None:
        sock = server.tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def trickle(server: Server, head: bytes, tail: bytes, every: float = 0.5) -> Outcome:
    """Send ``head`` at once, then ``tail`` one byte every ``every`` seconds, until the server closes."""
    started = time.monotonic()
    answer = b""
    with contextlib.closing(_connect(server)) as sock:
        sock.setblocking(True)
        sock.sendall(head)
        for byte in tail:
            if time.monotonic() - started > BOUND:
                return Outcome(None, answer)
            readable, _, _ = select.select([sock], [], [], every)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionError, ssl.SSLError):
                    chunk = b""
                if not chunk:
                    return Outcome(time.monotonic() - started, answer)
                answer += chunk
            try:
                sock.sendall(bytes([byte]))
            except (ConnectionError, ssl.SSLError):
                return Outcome(time.monotonic() - started, answer)
    return Outcome(None, answer)


def slow_headers(server: Server) -> Outcome:
    return trickle(server, b"GET /livez HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 200)


def slow_body(server: Server) -> Outcome:
    head = f"POST {server.post_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
           f"Content-Length: 1000\r\n\r\n".encode()
    return trickle(server, head, b'{"version": "' + b"a" * 900)


def idle(server: Server) -> Outcome:
    """One request, then nothing: when does the server close the kept-alive connection?"""
    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nok\n"):
            answer += sock.recv(4096)
        started = time.monotonic()
        sock.settimeout(BOUND)
        with contextlib.suppress(TimeoutError):
            if sock.recv(4096) == b"":
                return Outcome(time.monotonic() - started, answer)
    return Outcome(None, answer)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, trust_env=False, verify=False)
    except httpx.TransportError:
        return None


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    tmp = tmp_path_factory.mktemp("servers")
    processes = podkit.Processes(tmp)
    try:
        repo = podkit.Repository.start(processes, tmp, first="hello")
        ca = tlstools.new_ca()
        leaf = tlstools.new_leaf(ca)
        (tmp / "tls.crt").write_bytes(leaf.cert_pem)
        (tmp / "tls.key").write_bytes(leaf.key_pem)
        (tmp / "annotations").write_text(downwardapi.format_annotations(podkit.DECLARE))
        (tmp / "root").mkdir()
        ports = {name: podkit.free_port() for name in ("datadeployer", "healthz", "workload", "webhook", "health")}
        loopback = ("--host", "127.0.0.1")
        processes.start("datadeployer", "datadeployer", "--mode", "sidecar", "--repository", repo.url, "--root",
                        str(tmp / "root"), "--annotations-file", str(tmp / "annotations"), *loopback,
                        "--port", str(ports["datadeployer"]))
        processes.start("watchdoghealthz", "watchdoghealthz", "--annotations-file", str(tmp / "annotations"),
                        *loopback, "--port", str(ports["healthz"]))
        processes.start("testworkload", "testworkload", *loopback, "--port", str(ports["workload"]))
        processes.start("webhook", "webhook", *loopback, "--port", str(ports["webhook"]), "--health-port",
                        str(ports["health"]), "--tls-cert-file", str(tmp / "tls.crt"), "--tls-key-file",
                        str(tmp / "tls.key"), "--drain-delay", "0")
        base = "http://127.0.0.1"
        for url in (f"{base}:{ports['datadeployer']}/livez", f"{base}:{ports['healthz']}/livez",
                    f"{base}:{ports['workload']}/ping", f"{base}:{ports['health']}/livez"):
            wait_until(url, lambda url=url: (r := _get(url)) is not None and r.status_code == 200, timeout=60)
        yield {
            "datarepository": Server("datarepository", int(repo.url.rsplit(":", 1)[1]),
                                     "/v1/sources/greetings/last-known-good", LIMITS),
            "datadeployer": Server("datadeployer", ports["datadeployer"], "/status", IN_POD),
            "watchdoghealthz": Server("watchdoghealthz", ports["healthz"], "/healthz", IN_POD),
            "testworkload": Server("testworkload", ports["workload"], "/notify", IN_POD),
            "webhook": Server("webhook", ports["webhook"], "/mutate", LIMITS, tlstools.client_context(ca)),
            "webhook-health": Server("webhook-health", ports["health"], "/livez", LIMITS),
        }
    finally:
        problems = processes.stop_all()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def slow(programs: dict[str, Server]) -> Iterator[dict[tuple[str, str], concurrent.futures.Future[Outcome]]]:
    """Every slow client against every server, all at once (so the module waits ~10 s once)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 * len(programs) + 1) as pool:
        futures = {(kind, name): pool.submit(client, server) for name, server in programs.items()
                   for kind, client in (("headers", slow_headers), ("body", slow_body))}
        futures["idle", "watchdoghealthz"] = pool.submit(idle, programs["watchdoghealthz"])
        yield futures


@pytest.mark.parametrize("name", ["datarepository", "datadeployer", "watchdoghealthz", "testworkload", "webhook",
                                  "webhook-health"])
def test_a_client_sending_its_headers_byte_by_byte_is_cut_off_with_408(
        slow: dict[tuple[str, str], concurrent.futures.Future[Outcome]], programs: dict[str, Server],
        name: str) -> None:
    outcome = slow[("headers", name)].result(BOUND + 10)
    assert outcome.closed_after is not None, f"{name} still held the connection after {BOUND:g}s"
    assert outcome.closed_after >= programs[name].limits.header_timeout - 1  # closed by the deadline, not before
    assert outcome.answer.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("name", ["datarepository", "datadeployer", "watchdoghealthz", "testworkload", "webhook"])
def test_a_client_sending_its_body_byte_by_byte_is_cut_off(
        slow: dict[tuple[str, str], concurrent.futures.Future[Outcome]], programs: dict[str, Server],
        name: str) -> None:
    outcome = slow[("body", name)].result(BOUND + 10)
    assert outcome.closed_after is not None, f"{name} still held the connection after {BOUND:g}s"
    assert outcome.closed_after >= programs[name].limits.body_timeout - 1


def test_slow_clients_are_logged_as_warnings_without_tracebacks(
        slow: dict[tuple[str, str], concurrent.futures.Future[Outcome]], programs: dict[str, Server],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    for future in slow.values():
        future.result(BOUND + 10)
    logs = {p.stem: p.read_text() for p in tmp_path_factory.getbasetemp().glob("servers*/*.log")}
    repository = logs["datarepository"]
    assert "closed a connection: no complete request headers within 10s" in repository
    assert "closed a connection: request body not complete within 10s" in repository
    for name, text in logs.items():
        assert "Traceback" not in text and "Exception in ASGI application" not in text, f"{name}:\n{text[-3000:]}"


def _greedy(server: Server, count: int) -> int:
    """Open ``count`` idle connections at once; how many were refused with a 503."""
    socks = [_connect(server) for _ in range(count)]
    try:
        refused = 0
        deadline = time.monotonic() + 10
        pending = list(socks)
        while pending and time.monotonic() < deadline and refused < count - server.limits.max_connections:
            readable, _, _ = select.select(pending, [], [], 0.5)
            for sock in readable:
                pending.remove(sock)
                with contextlib.suppress(OSError):
                    refused += sock.recv(64).startswith(b"HTTP/1.1 503 ")
        return refused
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("name", ["testworkload", "datarepository"])
def test_connections_beyond_the_limit_get_503_and_the_server_serves_again_after(
        programs: dict[str, Server], name: str) -> None:
    server = programs[name]
    assert _greedy(server, server.limits.max_connections + 8) == 8
    path = "/ping" if name == "testworkload" else "/livez"
    assert wait_until("a normal request served", lambda: (r := _get(f"http://127.0.0.1:{server.port}{path}"))
                      is not None and r.status_code == 200, timeout=15)


def test_headers_over_16_kib_are_refused_with_431(programs: dict[str, Server]) -> None:
    server = programs["datadeployer"]
    with contextlib.closing(_connect(server)) as sock:
        big = b"a" * (LIMITS.max_header_bytes + 1024)
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 431 ")


def test_an_idle_keep_alive_connection_to_an_in_pod_server_is_closed_after_5_seconds(
        slow: dict[tuple[str, str], concurrent.futures.Future[Outcome]]) -> None:
    outcome = slow[("idle", "watchdoghealthz")].result(BOUND + 10)
    assert outcome.answer.startswith(b"HTTP/1.1 200 ") and outcome.closed_after is not None
    assert IN_POD.keep_alive - 1 <= outcome.closed_after < LIMITS.keep_alive


def test_the_test_workloads_notification_body_is_bounded() -> None:
    with TestClient(testworkload.app([])) as client:
        assert client.post("/notify", content=b" " * (testworkload.MAX_NOTIFY_BYTES + 1)).status_code == 413
        assert client.post("/notify", content=values.BRACKETS_5000.encode()).status_code == 400
        assert client.post("/notify", json={"version": "v1"}).status_code == 200


# --- watchdoghealthz and hostile annotation values (defect 1) ---------------------------------------------

def _monitor(tmp_path: Path, notes: dict[str, str]) -> watchdoghealthz.Monitor:
    (tmp_path / "annotations").write_text(downwardapi.format_annotations(notes))
    return watchdoghealthz.Monitor(podinfo.Watcher(tmp_path / "annotations"), None, time=clock.ManualClock())


@pytest.mark.parametrize("notes", [
    {"status.autocrane.io/x": f"error/{values.LATE}/m"},
    {"status.autocrane.io/x": f"error/{values.EARLY}/m"},
    {"watchdoghealthz.autocrane.io/min-ready-seconds": "9" * 5000},
    {"watchdoghealthz.autocrane.io/min-ready-seconds": "1e999999999"},
], ids=["late", "early", "5000-digit-min-ready", "huge-float-min-ready"])
def test_healthz_answers_with_hostile_annotations_instead_of_500(tmp_path: Path, notes: dict[str, str]) -> None:
    monitor = _monitor(tmp_path, notes)
    with TestClient(watchdoghealthz.app(monitor)) as client:
        answer = client.get("/healthz")
    assert answer.status_code in (200, 503)
    if "status.autocrane.io/x" in notes:
        assert answer.status_code == 503 and "status.autocrane.io/x" in answer.text


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(notes=values.annotation_maps(), junk=st.none() | st.binary(max_size=200))
def test_any_annotations_file_is_ready_or_not_never_an_error(tmp_path: Path, notes: dict[str, str],
                                                            junk: bytes | None) -> None:
    """What ``/healthz`` runs (a tick, then the decision) never raises, whatever the file holds; a status
    value at level error, readable or not, is never ready."""
    monitor = _monitor(tmp_path, notes)
    if junk is not None:
        (tmp_path / "annotations").write_bytes(junk)
    monitor.tick()
    ready, reason = monitor.decide()
    assert isinstance(ready, bool) and reason
    erring = junk is None and any(key.startswith("status.autocrane.io/") and key != "status.autocrane.io/health"
                                  and value.startswith("error/") for key, value in notes.items())
    assert not (erring and ready)


def test_the_background_watch_survives_an_unexpected_error_and_logs_it_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monitor = _monitor(tmp_path, {"status.autocrane.io/x": "info/2026-01-01T00:00:00Z/ok"})
    calls = {"n": 0}
    real = watchdoghealthz.observe

    def observe(*args: object) -> watchdoghealthz.Health:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RuntimeError("nobody foresaw this value")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(watchdoghealthz, "observe", observe)

    async def scenario() -> None:
        task = asyncio.create_task(watchdoghealthz.watch(monitor, 0.01))
        try:
            await eventually("a good observation after the failures",
                             lambda: calls["n"] > 3 and not monitor.health.errors)
            assert not task.done()
        finally:
            task.cancel()

    with caplog.at_level("ERROR"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records].count(
        "unexpected error (logged once; not ready meanwhile): RuntimeError: 'nobody foresaw this value'") == 1


def test_livez_fails_once_the_background_watch_has_stopped(tmp_path: Path) -> None:
    stopped = ["the background watch of the annotations file stopped"]
    monitor = _monitor(tmp_path, {})
    with TestClient(watchdoghealthz.app(monitor, lambda: stopped[0])) as client:
        assert client.get("/livez").status_code == 503
        stopped[0] = None  # type: ignore[call-overload]
        assert client.get("/livez").status_code == 200
