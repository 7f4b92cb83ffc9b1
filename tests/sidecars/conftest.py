"""Fixtures shared by the datadeployer tests: a fake data repository served on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sidecars.servers import FakeRepository


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def url(repo: FakeRepository) -> Iterator[str]:
    with repo.serve() as base:
        yield base
