"""Run commands in the built images with ``buildah run``, as the pods would: non-root, no network.

A :class:`Container` is one working container of an image (``buildah from``). Each run starts the
image's own entrypoint, as UID 65532 (the injector's and the chart's ``runAsUser``) unless told
otherwise, with ``--network none`` unless a test serves something on loopback (``host``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from devcluster import images

USER = "65532:65532"


class Container:
    def __init__(self, buildah: images.Buildah, image: images.Image) -> None:
        self.buildah = buildah
        self.image = image
        config = json.loads(buildah.run("inspect", "--type", "image", image.ref))["OCIv1"]["config"]
        self.entrypoint: list[str] = config.get("Entrypoint") or []
        self.id = buildah.run("from", "--pull=never", image.ref)

    def _command(self, args: Sequence[str], user: str, network: str, volumes: Sequence[str],
                 entrypoint: bool) -> list[str]:
        mounts = [a for volume in volumes for a in ("--volume", volume)]
        return self.buildah.command("run", "--user", user, "--network", network, *mounts, self.id, "--",
                                    *(self.entrypoint if entrypoint else []), *args)

    def run(self, *args: str, user: str = USER, network: str = "none", volumes: Sequence[str] = (),
            entrypoint: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run to completion: ``autocrane ARGS`` (the entrypoint), or ``ARGS`` with ``entrypoint=False``."""
        return subprocess.run(self._command(args, user, network, volumes, entrypoint), capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *args: str, log: Path, user: str = USER, network: str = "host",
              volumes: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start a server in the background (stopping ``buildah run`` stops it); its output goes to ``log``."""
        with open(log, "wb") as out:
            return subprocess.Popen(self._command(args, user, network, volumes, True), stdout=out,
                                    stderr=subprocess.STDOUT)

    def files_owned_by(self, uid: int) -> list[str]:
        """Paths in the container's root filesystem (not its volumes) owned by ``uid``: what it wrote there."""
        root = Path(self.buildah.run("mount", self.id))
        try:
            found = []
            for directory, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    path = os.path.join(directory, name)
                    if os.lstat(path).st_uid == uid:
                        found.append("/" + os.path.relpath(path, root))
            return sorted(found)
        finally:
            self.buildah.run("umount", self.id)

    def remove(self) -> None:
        subprocess.run(self.buildah.command("rm", self.id), capture_output=True, timeout=120)
