"""End to end on kind: the real images, installed by the chart, injecting real pods.

These need Docker and the `kind` binary, which the project's CI machines do not have: there the
tests skip, saying so. On a workstation with both, `pytest tests/e2e` builds the two images,
creates a kind cluster (or uses AUTOCRANE_KIND_CLUSTER), loads the images into it, installs the
chart with `helm upgrade --install`, and checks that an opted-in pod comes out injected and Ready.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import build

ROOT = Path(__file__).resolve().parents[2]
TAG = "e2e"


def _docker_works() -> str | None:
    if shutil.which("docker") is None:
        return "no docker binary"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    return None if probe.returncode == 0 else f"no Docker engine answers (`docker info`: {probe.stderr.strip()[:120]})"


def _why_not() -> str | None:
    if reason := _docker_works():
        return reason
    if shutil.which("kind") is None:
        return "no `kind` binary on PATH"
    if not (build.bin_dir() / "helm").exists():
        return "helm is not built; run `python -m devcluster build`"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=f"kind e2e skipped: {_why_not()}")


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=1200, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    existing = os.environ.get("AUTOCRANE_KIND_CLUSTER")
    name = existing or f"autocrane-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    if not existing:
        _run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "180s")
    else:
        kubeconfig.write_text(_run("kind", "get", "kubeconfig", "--name", name).stdout)
    try:
        images = (("autocrane/autocrane", "Dockerfile.webhook"), ("autocrane/sidecar", "Dockerfile.sidecar"))
        for image, dockerfile in images:
            _run("docker", "build", "-f", dockerfile, "-t", f"{image}:{TAG}", ".", cwd=ROOT)
            _run("kind", "load", "docker-image", f"{image}:{TAG}", "--name", name)
        yield kubeconfig
    finally:
        if not existing:
            subprocess.run(["kind", "delete", "cluster", "--name", name], capture_output=True, timeout=300)


def test_the_chart_installs_the_real_images_and_an_opted_in_pod_comes_out_injected(kind_cluster: Path) -> None:
    helm, kubectl = str(build.bin_dir() / "helm"), str(build.bin_dir() / "kubectl")
    kc = ["--kubeconfig", str(kind_cluster)]
    _run(helm, "upgrade", "--install", "autocrane", str(ROOT / "charts" / "autocrane"), "-n", "autocrane-system",
         "--create-namespace", "--set", f"image.tag={TAG}", "--set", f"sidecarImage.tag={TAG}",
         "--set", "image.pullPolicy=Never", "--wait", "--timeout", "5m", *kc)
    _run(kubectl, *kc, "create", "namespace", "e2e")
    _run(kubectl, *kc, "label", "namespace", "e2e", "autocrane-inject=enabled")
    pod = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  annotations:\n"
           "    watchdoghealthz.autocrane.io/min-ready-seconds: '1'\nspec:\n  containers:\n"
           f"  - name: app\n    image: autocrane/sidecar:{TAG}\n    imagePullPolicy: Never\n"
           "    args: [testworkload]\n")
    _run(kubectl, *kc, "-n", "e2e", "apply", "-f", "-", input=pod)
    _run(kubectl, *kc, "-n", "e2e", "wait", "pod/app", "--for=condition=Ready", "--timeout=180s")
    names = _run(kubectl, *kc, "-n", "e2e", "get", "pod", "app", "-o", "jsonpath={.spec.containers[*].name}").stdout
    assert "autocrane-watchdoghealthz" in names
