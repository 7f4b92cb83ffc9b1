"""The datarepository and the datadeployer sidecar as real processes, talking over 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devcluster import controlplane, downwardapi
from tests.waiting import wait_until

free_port = controlplane.free_port


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def autocrane(started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", "from autocrane import cli; cli.main()", *args, "--log-format",
                             "text"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started.append(proc)
    return proc


def test_a_repository_and_a_sidecar_deliver_a_directory_to_a_pod(tmp_path: Path,
                                                                 processes: list[subprocess.Popen[str]]) -> None:
    (tmp_path / "upstream").mkdir()
    (tmp_path / "upstream/hello.txt").write_text("hello v1")
    (tmp_path / "sources.yaml").write_text(f"sources:\n  - name: greetings\n    every: 0.2\n"
                                           f"    directory: {{path: {tmp_path / 'upstream'}}}\n")
    repo_port, sidecar_port = free_port(), free_port()
    repository = autocrane(processes, "datarepository", "--config", str(tmp_path / "sources.yaml"),
                           "--data-dir", str(tmp_path / "state"), "--host", "127.0.0.1", "--port", str(repo_port))
    base = f"http://127.0.0.1:{repo_port}"
    wait_until("repository ready", lambda: (r := _get(f"{base}/readyz")) is not None and r.status_code == 200, 30)
    (tmp_path / "root").mkdir()
    (tmp_path / "annotations").write_text(downwardapi.format_annotations({"data.autocrane.io/greet": "greetings"}))
    sidecar = autocrane(processes, "datadeployer", "--mode", "sidecar", "--repository", base,
                        "--root", str(tmp_path / "root"), "--annotations-file", str(tmp_path / "annotations"),
                        "--request-timeout", "0", "--host", "127.0.0.1", "--port", str(sidecar_port),
                        "--poll-seconds", "0.05")
    status = f"http://127.0.0.1:{sidecar_port}"
    wait_until("sidecar synced", lambda: (r := _get(f"{status}/synced")) is not None and r.status_code == 200, 30)
    assert (tmp_path / "root/greet/hello.txt").read_text() == "hello v1"
    first = httpx.get(f"{status}/status").json()["sets"]["greet"]
    assert first["fallback"] is True

    (tmp_path / "upstream/hello.txt").write_text("hello v2")
    wait_until("version 2", lambda: len(httpx.get(f"{base}/v1/sources/greetings").json()["versions"]) == 2, 30)
    newest = httpx.get(f"{base}/v1/sources/greetings").json()["versions"][-1]
    request = f'{{"version":"{newest["version"]}","sha256":"{newest["sha256"]}"}}'
    (tmp_path / "annotations").write_text(downwardapi.format_annotations({
        "data.autocrane.io/greet": "greetings", "request.data.autocrane.io/greet": request}))
    wait_until("v2 acknowledged",
               lambda: httpx.get(f"{status}/status").json()["sets"]["greet"]["version"] == newest["version"], 30)
    assert (tmp_path / "root/greet/hello.txt").read_text() == "hello v2"
    assert httpx.get(f"{status}/watchdog").status_code == 200

    for proc in (sidecar, repository):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stdout.read() if proc.stdout else ""
