"""Hostile clients against a real ``autocrane datarepository`` on 127.0.0.1 (issue 8, defects 6 and 10):
``PUT .../last-known-good`` reads at most 4 KiB, never echoes the value whole, never answers 500, and
a client that abandons its body is one warning line, not an ERROR traceback."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from sidecars.datarepo import server
from tests.cluster import podkit
from tests.waiting import wait_until

PATH = "/v1/sources/greetings/last-known-good"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[podkit.Repository]:
    tmp = tmp_path_factory.mktemp("repository")
    processes = podkit.Processes(tmp)
    try:
        yield podkit.Repository.start(processes, tmp, first="hello")
    finally:
        problems = processes.stop_all()
    assert not problems, "\n".join(problems)


def _put(repository: podkit.Repository, body: bytes, **headers: str) -> httpx.Response:
    return httpx.put(repository.url + PATH, content=body, headers=headers, timeout=10, trust_env=False)


def _raw(repository: podkit.Repository, request: bytes, then: bytes = b"") -> bytes:
    """Send ``request`` (and ``then``), return what the server answers before it closes (10 s at most)."""
    port = int(repository.url.rsplit(":", 1)[1])
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as sock:
        sock.sendall(request)
        with contextlib.suppress(OSError):
            sock.sendall(then)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
        return answer


def test_a_body_declared_at_200_mb_is_refused_413_before_it_is_read(repository: podkit.Repository) -> None:
    head = f"PUT {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200000000\r\n\r\n"
    answer = _raw(repository, head.encode(), b'{"version": "')  # and nothing more: the answer must not wait for it
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body_over_4_kib_is_refused_413_once_it_passes_the_limit(repository: podkit.Repository) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"version": "'
        for _ in range(100):  # 100 KiB, of which the server reads a little over 4
            yield b"a" * 1024

    answer = httpx.put(repository.url + PATH, content=chunks(), timeout=10, trust_env=False)
    assert answer.status_code == 413 and str(server.MAX_LKG_BODY) in answer.text


def test_brackets_100000_deep_are_refused_413_and_2000_deep_400_never_500(repository: podkit.Repository) -> None:
    assert _put(repository, b"[" * 100_000).status_code == 413
    for depth in (100, 2000):
        deep = _put(repository, b"[" * depth + b"]" * depth)
        assert deep.status_code == 400 and "body: " in deep.text and "JSON" in deep.text


@pytest.mark.parametrize("body", [
    json.dumps({"version": "v" * 3000 + "/"}), json.dumps({"version": ["x" * 3000]}),
    json.dumps({"version": "x" * 3000 + "\n"}), "x" * 4000,
])
def test_a_400_answer_quotes_the_value_cut_short(repository: podkit.Repository, body: str) -> None:
    answer = _put(repository, body.encode())
    assert answer.status_code == 400 and len(answer.text) < 400


def test_a_version_with_a_trailing_newline_is_refused(repository: podkit.Repository) -> None:
    newest = repository.versions()[-1]["version"]
    assert _put(repository, json.dumps({"version": newest + "\n"}).encode()).status_code == 400
    assert _put(repository, json.dumps({"version": newest}).encode()).status_code == 200


def test_an_unknown_source_of_16_kib_is_not_echoed_whole(repository: podkit.Repository) -> None:
    answer = httpx.get(f"{repository.url}/v1/sources/{'a' * 8000}", timeout=10, trust_env=False)
    assert answer.status_code == 404 and len(answer.text) < 200


def test_a_client_that_abandons_its_body_is_one_warning_line_not_an_error_traceback(
        repository: podkit.Repository) -> None:
    before = repository.process.output()
    head = f"PUT {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
    port = int(repository.url.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + b'{"version": "a')  # and goes away

    def new_lines() -> list[str]:
        return repository.process.output()[len(before):].splitlines()

    wait_until("three disconnects logged", lambda: sum("went away" in line for line in new_lines()) >= 3, timeout=15)
    lines = new_lines()
    assert all(" warning " in line for line in lines if "went away" in line)
    assert not any("Traceback" in line or " error " in line for line in lines), "\n".join(lines)
