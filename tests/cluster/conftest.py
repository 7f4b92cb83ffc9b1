"""Fixtures of the in-pod program tests (test_datadeployer, test_injected_pod)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import podkit


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[podkit.Processes]:
    """Start ``autocrane`` programs; all are stopped at the end, also on failure.

    After a passing test each must also have exited 0 on SIGTERM (a graceful shutdown); after a
    failing one that would only add noise (a program stopped while starting up exits -15).
    """
    running = podkit.Processes(tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield running
    finally:
        problems = running.stop_all()
    if request.session.testsfailed == failed_before:
        assert not problems, "\n".join(problems)


@pytest.fixture
def repository(tmp_path: Path, processes: podkit.Processes) -> podkit.Repository:
    """A real ``autocrane datarepository`` on 127.0.0.1 serving the directory source ``greetings``."""
    return podkit.Repository.start(processes, tmp_path)
