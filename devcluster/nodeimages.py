"""The real node's own images, made here from our Go programs: no registry is reachable.

- ``pause`` (``localhost/devcluster/pause:<hash>``): every pod sandbox's PID 1 (``gosrc/pause``),
  containerd's ``sandbox_image``.
- ``toolbox`` (``localhost/devcluster/toolbox:<hash>``): ``serve``, ``get``, ``lookup``,
  ``incluster`` and ``cat`` in one static binary (``gosrc/toolbox``), for looking at the node from
  inside a pod where a registry would give busybox.

Each is one static binary in an image ``from scratch``, committed by buildah straight into an OCI
archive (for ``ctr images import``). Its tag is a hash of the program's source, the Go version and
this recipe, so a changed program makes a new image and an unchanged one costs a hash. buildah
runs with a throw-away storage root and the ``vfs`` driver: no mounts, nothing left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devcluster import build, hostpackages

RECIPE_VERSION = "1"
"""Part of every hash: bump it when this module changes how an image is made."""


@dataclasses.dataclass(frozen=True, slots=True)
class NodeImage:
    name: str
    ref: str
    """The name the archive carries, ``localhost/devcluster/NAME:<hash>``."""
    archive: Path
    """An OCI archive for ``ctr -n k8s.io images import``."""


_USERS = {"pause": "65535:65535", "toolbox": "65532:65532"}
"""Non-root, numeric (so ``runAsNonRoot`` can check it): the pause image's user is the usual one."""


def images_dir() -> Path:
    return build.cache_dir() / "node-images"


def _tag(name: str) -> str:
    recipe = {"version": RECIPE_VERSION, "go": build.go_version(), "user": _USERS[name],
              "source": (build.GO_SOURCES / name / "main.go").read_text()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure(name: str) -> NodeImage:
    """The image ``name`` (``pause`` or ``toolbox``), built unless its archive is cached."""
    tag = _tag(name)
    image = NodeImage(name, f"localhost/devcluster/{name}:{tag}", images_dir() / f"{name}-{tag}.oci.tar")
    if not image.archive.exists():
        _build(image)
    return image


def ensure_all() -> list[NodeImage]:
    return [ensure(name) for name in _USERS]


def _build(image: NodeImage) -> None:
    hostpackages.ensure(["buildah"], why="the real node's images")
    image.archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"devcluster-{image.name}-", dir=image.archive.parent) as tmp:
        work = Path(tmp)
        binary = build.build_program(image.name, work / "context" / image.name)
        storage = ["--root", str(work / "root"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]

        def buildah(*args: str) -> str:
            proc = subprocess.run(["buildah", *storage, *args], capture_output=True, text=True)
            if proc.returncode != 0:
                raise build.BuildError(f"buildah {args[0]} for {image.ref} failed: {proc.stderr.strip()}")
            return proc.stdout.strip()

        container = buildah("from", "--quiet", "scratch")
        buildah("copy", container, str(binary), f"/{image.name}")
        buildah("config", "--entrypoint", json.dumps([f"/{image.name}"]), "--user", _USERS[image.name],
                "--label", f"io.autocrane.devcluster.source=devcluster/gosrc/{image.name}", container)
        partial = work / "image.oci.tar"
        buildah("commit", "--quiet", "--rm", container, f"oci-archive:{partial}:{image.ref}")
        os.replace(partial, image.archive)
        shutil.rmtree(work / "root", ignore_errors=True)
    for stale in image.archive.parent.glob(f"{image.name}-*.oci.tar"):
        if stale != image.archive:
            stale.unlink(missing_ok=True)
