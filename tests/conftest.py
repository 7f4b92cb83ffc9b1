"""Shared fixtures. Cluster fixtures start the real control plane lazily, once per session."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import harness

# Set when any test that used the cluster failed, so the session keeps the control-plane logs.
_FAILED_CLUSTER_TESTS: list[str] = []
# What the session's cluster was, for the closing summary.
_CLUSTER_DESCRIPTION: list[str] = []


@pytest.fixture(scope="session")
def cluster() -> Iterator[harness.Cluster]:
    """The session's cluster: AUTOCRANE_TEST_KUBECONFIG if set, else a local control plane."""
    with harness.session_cluster() as c:
        kind = "local control plane" if c.local else f"AUTOCRANE_TEST_KUBECONFIG={c.kubeconfig}"
        _CLUSTER_DESCRIPTION.append(f"cluster tests ran against kube-apiserver {c.server_version()} ({kind})")
        _CLUSTER_DESCRIPTION.append(c.real_node_status)
        yield c
        if _FAILED_CLUSTER_TESTS and c.logs is not None:
            kept = Path(os.environ.get("AUTOCRANE_TEST_LOGS", "test-logs")).resolve() / "controlplane"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(c.logs, kept)
            print(f"\ncontrol-plane logs of the failed run kept in {kept}")


@pytest.fixture(scope="session")
def real_node(cluster: harness.Cluster) -> str:
    """The real node's name; skips (with the reason) where the session's cluster has none.

    Session-scoped, so that module fixtures (a data repository pod, an injector) can use it too.

    In CI (``AUTOCRANE_REQUIRE_REAL_NODE=1``) the session cluster fails to start without it
    instead, so no real-node test is ever skipped there.
    """
    return harness.require_real_node(cluster)


@pytest.fixture
def namespace(cluster: harness.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (not waited for: deletion is asynchronous)."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        _FAILED_CLUSTER_TESTS.append(item.nodeid)
        plane = harness.current_control_plane()
        if plane is not None:
            for proc in plane.processes:
                report.sections.append((f"{proc.name} log (tail)", proc.tail(25)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _CLUSTER_DESCRIPTION:
        terminalreporter.write_line(line)
