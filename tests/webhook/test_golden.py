"""Golden files: every ``testdata/*.yaml`` rendered by ``autocrane inject`` equals its ``.yaml.injected`` twin.

Inputs are discovered; a missing or stale golden fails. After an intended change, refresh them all with
``AUTOCRANE_REFRESH_GOLDEN=1 pytest tests/webhook/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.webhook import podchecks
from webhook import render, settings

TESTDATA = Path(__file__).parent / "testdata"
INPUTS = sorted(TESTDATA.glob("*.yaml"))
REFRESH = os.environ.get("AUTOCRANE_REFRESH_GOLDEN") == "1"
SETTINGS = settings.load()
HINT = "refresh with AUTOCRANE_REFRESH_GOLDEN=1 and review the diff"


def golden_of(source: Path) -> Path:
    return source.with_name(source.name + ".injected")


def test_there_are_golden_inputs() -> None:
    assert len(INPUTS) >= 5


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name)
def test_rendering_matches_the_golden_file(source: Path) -> None:
    rendered = render.render_text(source.read_text(), SETTINGS)
    golden = golden_of(source)
    if REFRESH:
        golden.write_text(rendered)
        return
    assert golden.exists(), f"{golden.name} is missing: {HINT}"
    assert rendered == golden.read_text(), f"{golden.name} is stale: {HINT}"


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name)
def test_rendering_a_golden_file_again_changes_nothing(source: Path) -> None:
    golden = golden_of(source)
    if not golden.exists():
        pytest.fail(f"{golden.name} is missing: {HINT}")
    assert render.render_text(golden.read_text(), SETTINGS) == golden.read_text()


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name)
def test_golden_pods_are_valid(source: Path) -> None:
    for document in yaml.safe_load_all(golden_of(source).read_text()):
        for pod in _pods(document):
            podchecks.assert_valid_pod(pod)
            for container in podchecks.injected_containers(pod):
                podchecks.assert_restricted(container)
                podchecks.assert_resources_set(container)


def test_no_golden_file_is_left_without_its_input() -> None:
    orphans = [g.name for g in TESTDATA.glob("*.injected") if not g.with_suffix("").exists()]
    assert not orphans, f"stale golden files without an input (delete them): {orphans}"


def _pods(document: object) -> list[dict]:  # type: ignore[type-arg]
    if not isinstance(document, dict):
        return []
    if document.get("kind") == "List":
        return [pod for item in document.get("items", []) for pod in _pods(item)]
    if document.get("kind") == "Pod":
        return [document]
    path = render.TEMPLATE_PATHS.get(str(document.get("kind")), ())
    node: object = document
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return [node] if path and isinstance(node, dict) else []
