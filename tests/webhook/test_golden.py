"""Golden files: every ``testdata/*.yaml`` rendered by ``autocrane inject`` equals its ``.yaml.injected`` twin,
and every pod in them, sent to the live admission app as an AdmissionReview, is patched into the same pod.

Inputs are discovered; a missing or stale golden fails. After an intended change, refresh them all with
``AUTOCRANE_REFRESH_GOLDEN=1 pytest tests/webhook/test_golden.py`` and review the diff. Both paths are
Istio's two (``TestInjection``): the offline render and the webhook the API server calls.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from starlette.testclient import TestClient

from tests.webhook import podchecks
from webhook import render, server, settings

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


@pytest.fixture(scope="module")
def webhook() -> Iterator[TestClient]:
    with TestClient(server.admission_app(SETTINGS)) as client:
        yield client


def _admitted(webhook: TestClient, pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` as the live admission path leaves it: POST /mutate, then the JSON patch it answers applied."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "golden", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
        "namespace": "golden", "object": pod}}
    answer = webhook.post("/mutate", json=review)
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["allowed"] is True and response["uid"] == "golden", response
    if "patch" not in response:
        return copy.deepcopy(pod)
    return jsonpatch.apply_patch(copy.deepcopy(pod), json.loads(base64.b64decode(response["patch"])))


def _as_pod(template: dict[str, Any]) -> dict[str, Any]:
    """What the API server sends for a workload's pod: the template as a Pod."""
    return {"apiVersion": "v1", "kind": "Pod", **template} if template.get("kind") is None else template


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name)
def test_the_live_admission_path_gives_every_golden_pod(source: Path, webhook: TestClient) -> None:
    documents = [d for d in yaml.safe_load_all(source.read_text()) if d is not None]
    goldens = list(yaml.safe_load_all(golden_of(source).read_text()))
    pairs = [(pod, injected) for document, golden in zip(documents, goldens, strict=True)
             for pod, injected in zip(_pods(document), _pods(golden), strict=True)]
    assert pairs, f"{source.name} holds no pod"
    for pod, injected in pairs:
        admitted = _admitted(webhook, _as_pod(pod))
        assert {k: admitted.get(k) for k in ("metadata", "spec")} == {k: injected.get(k) for k in ("metadata", "spec")}
