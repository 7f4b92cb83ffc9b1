"""What a real node could leave on the host, taken before and after to show that it left nothing.

Each part of a :class:`Snapshot` is a set of lines: the host's iptables rules (counters dropped),
links, addresses, routes, network namespaces, top-level cgroups, mounts, the files nodes write
outside their directories, the kernel settings kubelets change, the node registry, and the
processes of the clusters under test. Two parts are filtered, because the machine runs others'
work meanwhile: processes (to those whose command line names one of the clusters' directories, or
that sit in one of their cgroups; zombies are dead already) and mounts and cgroups (image builds'
buildah mounts and cgroups are left out).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from devcluster import build, linuxhost, nodeclaim

SYSCTLS = (*nodeclaim.KUBELET_TUNABLES, "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
IMAGE_BUILDS = (str(build.cache_dir() / "images") + "/", str(Path(tempfile.gettempdir()) / "mmdebstrap."))
"""buildah's storage for AutoCrane's images (``devcluster.images``) and mmdebstrap's chroots for
their base: their mounts come and go with builds that may run meanwhile, and are none of the node's."""
IMAGE_BUILD_CGROUPS = "buildah-"
"""Cgroups of ``buildah run`` steps of image builds that may run meanwhile."""
PATHS = (Path("/run/netns"), Path("/var/lib/containerd"), Path("/opt/cni"), Path("/usr/libexec/kubernetes"),
         nodeclaim.REGISTRY)
"""Paths nodes must never make (or, for the registry, keep): all of them counts."""


def _lines(*command: str) -> set[str]:
    out = subprocess.run(command, capture_output=True, text=True).stdout
    return {re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines() if line and not line.startswith("#")}


def _listing(paths: Iterable[Path], *, with_roots: bool = True) -> set[str]:
    found = set()
    for root in paths:
        if with_roots and (root.exists() or root.is_symlink()):
            found.add(str(root))
        if root.is_dir():
            found.update(str(p) for p in root.rglob("*"))
    return found


def _processes(markers: Iterable[str]) -> set[str]:
    markers = [m for m in markers if m]
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroups = (proc / "cgroup").read_text()
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state == "Z":  # dead: a killed container re-parented to PID 1 until it reaps it
            continue
        if any(m in cmdline or m in cgroups for m in markers):
            found.add(f"{proc.name} {cmdline.strip()}")
    return found


@dataclasses.dataclass(frozen=True)
class Snapshot:
    parts: dict[str, set[str]]

    @classmethod
    def take(cls, *markers: str) -> Snapshot:
        """``markers``: cluster directories and cgroup names whose processes count."""
        return cls({
            "iptables": _lines("iptables-save") | _lines("ip6tables-save"),
            "links": {line.split(":")[1].split("@")[0].strip() for line in _lines("ip", "-o", "link")},
            "addresses": {" ".join(line.split()[1:4]) for line in _lines("ip", "-o", "addr")},
            "routes": _lines("ip", "-4", "route", "show", "table", "all")
            | _lines("ip", "-6", "route", "show", "table", "all"),
            "netns": _lines("ip", "netns", "list"),
            "cgroups": {str(group) for h in linuxhost.cgroup_hierarchies() for group in h.iterdir()
                        if group.is_dir() and not group.name.startswith(IMAGE_BUILD_CGROUPS)},
            "mounts": {point for point, _ in linuxhost.mounts() if not point.startswith(IMAGE_BUILDS)},
            # The shared directories themselves go with the last node (the session's, here): their contents count.
            "paths": _listing(PATHS) | (_listing(nodeclaim.SHARED_DIRECTORIES, with_roots=False)
                                        - {str(d) for d in nodeclaim.SHARED_DIRECTORIES}),
            "sysctls": {f"{n}={linuxhost.read_sysctl(n)}" for n in SYSCTLS},
            "processes": _processes(markers),
        })

    def added_since(self, before: Snapshot) -> dict[str, list[str]]:
        """What is here now that was not before, by part (empty parts left out)."""
        return {name: sorted(lines - before.parts[name]) for name, lines in self.parts.items()
                if lines - before.parts[name]}
