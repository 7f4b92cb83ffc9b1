"""OS packages the local cluster's real node and image builds need, installed when missing.

The real node runs containerd, runc and the CNI plugins from Debian's packages, and images are
built with buildah from a base made by mmdebstrap. :func:`ensure` checks for each package's
command and, when some are missing, installs them with ``apt-get`` (as root, non-interactively).
Where that cannot be done (not root, no apt, the archive unreachable) it raises
:class:`MissingPackages`, whose message names every package and the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

# Debian package -> a command it provides (checked with shutil.which, or a path).
COMMANDS: Mapping[str, str] = {
    "containerd": "containerd",
    "runc": "runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "iptables",
    "iproute2": "ip",
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
    "uidmap": "newuidmap",
}


class MissingPackages(RuntimeError):
    """Packages are missing and could not be installed; the message says which and how."""


def missing(packages: Sequence[str]) -> list[str]:
    """The packages whose command is not on this machine."""
    absent = []
    for package in packages:
        command = COMMANDS.get(package, package)
        found = os.path.exists(command) if command.startswith("/") else shutil.which(command) is not None
        if not found:
            absent.append(package)
    return absent


def ensure(packages: Sequence[str], *, why: str) -> None:
    """Install the missing ``packages`` with apt-get, or raise MissingPackages naming them."""
    absent = missing(packages)
    if not absent:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *absent]
    hint = f"install them with: sudo {' '.join(command)}"
    if sys.platform != "linux" or shutil.which("apt-get") is None:
        raise MissingPackages(f"{why} needs the OS packages {', '.join(absent)} and apt-get is not available; "
                              "install them with this system's package manager")
    if os.geteuid() != 0:
        raise MissingPackages(f"{why} needs the OS packages {', '.join(absent)}; {hint}")
    print(f"installing OS packages for {why}: {', '.join(absent)}", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-q"], command):
        result = subprocess.run(step, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise MissingPackages(f"{why} needs the OS packages {', '.join(absent)}, and `{' '.join(step)}` "
                                  f"failed:\n{tail}\n{hint}")
    still = missing(absent)
    if still:
        raise MissingPackages(f"{why}: {', '.join(still)} installed but their commands are still missing")
