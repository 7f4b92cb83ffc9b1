"""Running the chart through the helm binary the devcluster builds, and installing the whole platform."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from devcluster import build, helmstack, images
from tests.cluster import harness, nodekit

CHART = Path(__file__).resolve().parents[2] / "charts" / "autocrane"


def helm(*args: str, kubeconfig: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run helm (skipping the test when it is not built), with ``--kubeconfig`` when given."""
    binary = build.bin_dir() / "helm"
    if not binary.exists():
        pytest.skip(f"helm is not built ({binary}); run 'python -m devcluster build'")
    extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run([str(binary), *args, *extra], capture_output=True, text=True, timeout=timeout)


@dataclasses.dataclass
class Release:
    """A release of the whole platform on the real node, installed as ``make dev`` installs it."""

    cluster: harness.Cluster
    name: str
    namespace: str
    apps: str
    """An opted-in namespace (``autocrane-inject=enabled``) for the apps."""
    data: Path
    """The directory source (``helmstack.SOURCE`` in it), behind a read-only PersistentVolume."""
    values: Path
    images: dict[str, images.Image]
    installed: bool = False

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return helm(*args, "-n", self.namespace, kubeconfig=self.cluster.kubeconfig, timeout=timeout)


R = TypeVar("R", bound=Release)


@contextlib.contextmanager
def platform_release(cluster: harness.Cluster, name: str, kind: type[R], tune: Callable[[dict[str, Any]], None],
                     before_install: Callable[[R], None] = lambda _: None) -> Iterator[R]:
    """Install release ``name`` of the chart (the images built here, the real node's placement, a directory
    source; ``tune`` changes the values) in a namespace of its own, wait for it, and remove all it made after.

    Skips (fails with ``AUTOCRANE_REQUIRE_REAL_NODE=1``) where there is no real node.
    """
    harness.require_real_node(cluster)
    plane = harness.current_control_plane()
    if plane is None or plane.node is None:
        pytest.skip(cluster.real_node_status)
    built = {i.name: i for i in plane.node.images if isinstance(i, images.Image)}
    suffix = uuid.uuid4().hex[:6]
    namespace, apps = f"{name}-{suffix}", f"{name}-apps-{suffix}"
    data = Path(tempfile.mkdtemp(prefix=f"{name}-data-"))
    data.chmod(0o755)
    (data / helmstack.SOURCE).mkdir()
    (data / helmstack.SOURCE / "greeting.txt").write_text("version 1\n")
    values = helmstack.values(built, source_claim=f"{namespace}-sources")
    tune(values)
    values_file = data.parent / f"{data.name}-values.yaml"
    values_file.write_text(json.dumps(values))
    release = kind(cluster, name, namespace, apps, data, values_file, built)
    volume, claim = helmstack.source_volume(namespace, data, f"{namespace}-sources")
    try:
        cluster.create_namespace(namespace)
        cluster.create_namespace(apps, labels={"autocrane-inject": "enabled"})
        cluster.core.create_persistent_volume(volume)
        cluster.core.create_namespaced_persistent_volume_claim(namespace, claim)
        before_install(release)
        done = release.helm("upgrade", "--install", name, str(CHART), "-f", str(values_file), "--wait",
                            "--timeout", "4m")
        assert done.returncode == 0, done.stderr + nodekit.kubectl(
            cluster, "get", "pods,pvc", "-n", namespace, "-o", "wide", check=False).stdout
        release.installed = True
        yield release
    finally:
        if release.installed:
            release.helm("uninstall", name, "--wait")
        for made in (apps, namespace):
            cluster.delete_namespace(made)
        with contextlib.suppress(client.exceptions.ApiException):
            cluster.core.delete_persistent_volume(volume["metadata"]["name"])
        shutil.rmtree(data, ignore_errors=True)
        values_file.unlink(missing_ok=True)
