"""The KWOK stand-in of `make dev` (no real node): one sample app per Running pod, on the pod's IP."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from devcluster import controlplane, stack
from tests.waiting import wait_until


def _answers(ip: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/ping", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture
def apps() -> Iterator[dict[str, tuple[str, stack.App]]]:
    running: dict[str, tuple[str, stack.App]] = {}
    yield running
    stack.reconcile(running, {}, lambda ip: NotImplemented)


def test_a_replacement_pod_reusing_an_ip_gets_its_own_app(apps: dict[str, tuple[str, stack.App]]) -> None:
    port, ip = controlplane.free_port(), "127.16.200.9"
    started: list[str] = []

    def start(address: str) -> stack.App:
        started.append(address)
        return subprocess.Popen([sys.executable, "-m", "autocrane", "testworkload", "--host", address, "--port",
                                 str(port), "--log-format", "text"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    stack.reconcile(apps, {"old-pod": ip}, start)
    wait_until("the old pod's app answering", lambda: _answers(ip, port))
    old = apps["old-pod"][1]
    stack.reconcile(apps, {"new-pod": ip}, start)  # the old pod went, its replacement has its IP
    assert old.poll() is not None, "the old app is stopped before the new one binds"
    new = apps["new-pod"][1]
    wait_until("the new pod's app answering", lambda: _answers(ip, port))
    assert new.poll() is None

    new.kill()  # whatever ends an app (a lost race for the port, a crash): it is started again
    new.wait()
    stack.reconcile(apps, {"new-pod": ip}, start)
    assert apps["new-pod"][1] is not new and started == [ip, ip, ip]
    wait_until("the restarted app answering", lambda: _answers(ip, port))
