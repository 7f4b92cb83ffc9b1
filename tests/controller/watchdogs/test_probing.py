"""Probe annotations: only the pod's own IP, and HTTP answers classified as ok / error / unknown."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from controller.watchdogs import probing
from controller.watchdogs.health import ProbeResult
from tests.controller.podfactory import pod


@pytest.mark.parametrize(("value", "url"), [
    ("POD_IP:8080/watchdog", "http://10.1.2.3:8080/watchdog"),
    ("POD_IP:8080/a/b-c_d.json", "http://10.1.2.3:8080/a/b-c_d.json"),
    ("POD_IP:9000", "http://10.1.2.3:9000/"),
    ("http://POD_IP:80/healthz?verbose=1", "http://10.1.2.3:80/healthz?verbose=1"),
    ("10.1.2.3:8080/watchdog", "http://10.1.2.3:8080/watchdog"),
    (" POD_IP:8080/w ", "http://10.1.2.3:8080/w"),
])
def test_a_probe_annotation_becomes_a_url_on_the_pods_own_ip(value: str, url: str) -> None:
    assert probing.target(value, "10.1.2.3") == url


def test_an_ipv6_pod_ip_is_bracketed() -> None:
    assert probing.target("POD_IP:8080/w", "fd00::5") == "http://[fd00::5]:8080/w"
    assert probing.target("[fd00::5]:8080/w", "fd00::5") == "http://[fd00::5]:8080/w"


@pytest.mark.parametrize("value", [
    "10.9.9.9:8080/watchdog",
    "169.254.169.254:80/latest/meta-data",
    "kubernetes.default.svc:443/api",
    "localhost:8080/w",
    "127.0.0.1:8080/w",
])
def test_any_other_host_is_refused(value: str) -> None:
    result = probing.target(value, "10.1.2.3")
    assert isinstance(result, ProbeResult) and result.outcome == "refused"
    assert "not the pod's own IP" in result.message


@pytest.mark.parametrize("value", [
    "POD_IP/watchdog", "POD_IP:0/w", "POD_IP:70000/w", "POD_IP:80/w#frag", "user@POD_IP:80/w",
    "POD_IP:80/w\\x", "https://POD_IP:443/w", "POD_IP:80@evil:80/w", "",
])
def test_malformed_values_are_refused_naming_the_expected_form(value: str) -> None:
    result = probing.target(value, "10.1.2.3")
    assert isinstance(result, ProbeResult) and result.outcome == "refused"


def test_a_pod_without_an_ip_gives_unknown() -> None:
    assert probing.target("POD_IP:80/w", "") == ProbeResult("unknown", "the pod has no IP yet")


class _Watchdog(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = {"/ok": 200, "/fail": 500, "/redirect": 302}.get(self.path, 404)
        body = b"database unreachable\n" if code == 500 else b""
        self.send_response(code)
        if code == 302:
            self.send_header("Location", "http://169.254.169.254/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Watchdog)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_port
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_answers_are_classified_and_redirects_are_not_followed(server: int) -> None:
    closed = _closed_port()
    p = pod(ip="127.0.0.1", annotations={
        "probe.autocrane.io/good": f"POD_IP:{server}/ok",
        "probe.autocrane.io/bad": f"POD_IP:{server}/fail",
        "probe.autocrane.io/moved": f"POD_IP:{server}/redirect",
        "probe.autocrane.io/down": f"POD_IP:{closed}/ok",
        "probe.autocrane.io/elsewhere": f"10.0.0.1:{server}/ok",
        "probe.autocrane.io/bad_name_": f"POD_IP:{server}/ok",
    })

    async def run() -> dict[str, dict[str, ProbeResult]]:
        async with probing.Prober(concurrency=2, timeout=2) as prober:
            return await prober.probe_all([p, pod("no-probes")])

    (results,) = asyncio.run(run()).values()
    assert results["good"] == ProbeResult("ok")
    assert results["bad"] == ProbeResult("error", "http 500: database unreachable")
    assert results["moved"] == ProbeResult("error", "http 302")
    assert results["down"].outcome == "unknown"
    assert results["elsewhere"].outcome == "refused"
    assert results["bad_name_"].outcome == "refused"


def test_a_pod_that_is_not_running_is_not_probed_and_gives_unknown() -> None:
    p = pod(phase="Pending", ip="", annotations={"probe.autocrane.io/app": "POD_IP:1/w"})

    async def run() -> dict[str, dict[str, ProbeResult]]:
        async with probing.Prober() as prober:
            return await prober.probe_all([p])

    assert asyncio.run(run())[p.uid]["app"].outcome == "unknown"


def test_a_watchdog_that_does_not_answer_in_time_gives_unknown() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        async def run() -> ProbeResult:
            async with probing.Prober(timeout=0.3) as prober:
                return await prober.get(f"http://127.0.0.1:{listener.getsockname()[1]}/w")

        result = asyncio.run(run())
    finally:
        listener.close()
    assert result == ProbeResult("unknown", "no answer within 0.3s")


def test_probing_many_pods_keeps_at_most_concurrency_tasks(server: int) -> None:
    many = [pod(f"web-{i}", ip="127.0.0.1", annotations={"probe.autocrane.io/app": f"POD_IP:{server}/ok"})
            for i in range(200)]
    most = 0

    async def run() -> dict[str, dict[str, ProbeResult]]:
        nonlocal most
        async with probing.Prober(concurrency=4, timeout=5) as prober:
            probe_pod = prober.probe_pod

            async def counting(p: object) -> dict[str, ProbeResult]:
                nonlocal most
                most = max(most, len(asyncio.all_tasks()))
                return await probe_pod(p)  # type: ignore[arg-type]

            prober.probe_pod = counting  # type: ignore[method-assign]
            return await prober.probe_all(many)

    results = asyncio.run(run())
    assert len(results) == 200 and all(r == {"app": ProbeResult("ok")} for r in results.values())
    # the test's task, the 4 workers and each one's gather of its pod's probes: never a task per pod (200)
    assert most <= 1 + 2 * 4
