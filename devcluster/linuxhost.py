"""Linux primitives the real node uses on the host: network namespaces, cgroups, mounts, sysctls.

Each function does one thing to the kernel and is safe to call again (creating what exists or
removing what is gone is not an error), so that a release after a crash can run the same code as
a clean stop. Nothing here knows about Kubernetes; :mod:`devcluster.nodeclaim` decides what to
create and remove, and :mod:`devcluster.node` what runs inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

_CLONE_NEWNET = 0x40000000
_MNT_DETACH = 2
_libc = ctypes.CDLL("libc.so.6", use_errno=True) if os.path.exists("/proc/self/mountinfo") else None


class HostError(RuntimeError):
    """A host operation failed; the message names the command or path and what the kernel said."""


def run(args: Sequence[str]) -> str:
    """Run a host command (``ip``, ``nsenter``...), raising HostError with its output on failure."""
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise HostError(f"`{' '.join(args)}` failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


# -- network namespaces -----------------------------------------------------------------------


def create_netns(path: Path) -> None:
    """A new network namespace, kept alive by a bind mount on ``path`` (not ``/run/netns``).

    ``ip netns add`` would bind it under ``/run/netns``, a directory shared by every cluster that
    it turns into a mount point of its own; under the cluster directory it is removed with the rest.
    """
    if is_mount_point(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    run(["unshare", f"--net={path}", "true"])


def in_netns(path: Path, *args: str) -> str:
    """Run a command inside the network namespace bound at ``path`` (and nothing else of it)."""
    return run(["nsenter", f"--net={path}", "--", *args])


def enter_netns(path: Path) -> None:
    """Move the calling thread into the network namespace at ``path`` (for a child before exec)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc is None or _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
    finally:
        os.close(fd)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def delete_link(name: str) -> None:
    if link_exists(name):
        with contextlib.suppress(HostError):  # gone meanwhile, with its namespace
            run(["ip", "link", "del", name])


# -- mounts -------------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount in this mount namespace."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        found.append((_unescape(before.split()[4]), after.split()[0]))
    return found


def is_mount_point(path: Path) -> bool:
    return str(path) in {point for point, _ in mounts()}


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (the order they can be unmounted in)."""
    prefix = str(root).rstrip("/") + "/"
    points = {point for point, _ in mounts() if point == str(root) or point.startswith(prefix)}
    return sorted(points, key=lambda p: (p.count("/"), p), reverse=True)


def unmount_all_under(root: Path) -> None:
    """Detach every mount at or below ``root``: container root filesystems, volumes, the netns.

    Lazy (MNT_DETACH) so that a mount still busy for a moment goes as soon as it is not; mounts
    stacked on one point and copies made by shared propagation take a few rounds.
    """
    for _ in range(20):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if _libc is not None and _libc.umount2(point.encode(), _MNT_DETACH) != 0:
                code = ctypes.get_errno()
                if code not in (errno.EINVAL, errno.ENOENT):  # not a mount (any more)
                    raise HostError(f"umount {point}: {os.strerror(code)}")
    raise HostError(f"mounts under {root} keep coming back: {mounts_under(root)[:5]}")


def rmtree_without_mounts(root: Path) -> None:
    """``shutil.rmtree`` that refuses to descend into mounts (a bind mount may be a host directory)."""
    if not root.exists():
        return
    left = mounts_under(root)
    if left:
        raise HostError(f"not removing {root}: still mounted below it: {', '.join(left[:5])}")
    shutil.rmtree(root, ignore_errors=True)


# -- cgroups ------------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """The mount point of every cgroup hierarchy: each v1 controller, name=systemd, the v2 tree."""
    return [Path(point) for point, kind in mounts() if kind in ("cgroup", "cgroup2")]


def _copy_cpuset(group: Path) -> None:
    # A new v1 cpuset group starts with no CPUs and no memory nodes: no task may join it until set.
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = group / name
        if mine.exists() and not mine.read_text().strip():
            mine.write_text((group.parent / name).read_text())


def _delegate_controllers(group: Path) -> None:
    """cgroup v2: let the children of one of our groups (the kubelet's ``kubepods``) use every
    controller the group has; v1 hierarchies have no ``cgroup.subtree_control``."""
    enabled = group / "cgroup.subtree_control"
    if enabled.exists():
        missing = set((group / "cgroup.controllers").read_text().split()) - set(enabled.read_text().split())
        if missing:
            enabled.write_text(" ".join(f"+{c}" for c in sorted(missing)))


def create_cgroup(relative: str) -> None:
    """Create ``relative`` (e.g. ``autocrane-devcluster-0/node``) in every hierarchy."""
    parts = Path(relative).parts
    for hierarchy in cgroup_hierarchies():
        group = hierarchy
        for depth, part in enumerate(parts, 1):
            group = group / part
            group.mkdir(exist_ok=True)
            _copy_cpuset(group)
            if depth < len(parts):
                _delegate_controllers(group)


def cgroup_procs_files(relative: str) -> list[Path]:
    """The ``cgroup.procs`` file of ``relative`` in every hierarchy: a PID written there joins it."""
    return [h / relative / "cgroup.procs" for h in cgroup_hierarchies() if (h / relative).is_dir()]


def join_cgroup(procs_files: Sequence[Path]) -> None:
    """Move the calling process into a cgroup (each hierarchy's ``cgroup.procs``); for a child before exec."""
    pid = str(os.getpid()).encode()
    for procs in procs_files:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


def _groups_under(relative: str) -> Iterator[Path]:
    """Every cgroup at or below ``relative`` in every hierarchy, children before parents."""
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / relative
        if top.is_dir():
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: w[0].count("/"), reverse=True):
                yield Path(dirpath)


def cgroup_pids(relative: str) -> set[int]:
    """Every process in the cgroup ``relative`` or below it, in any hierarchy."""
    pids: set[int] = set()
    for group in _groups_under(relative):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (group / "cgroup.procs").read_text().split())
    return pids


def kill_cgroup(relative: str, timeout: float = 20.0) -> None:
    """SIGKILL every process in the cgroup ``relative`` and below, until none is left.

    A cgroup is the one list of what a node started that a crash cannot lose: containerd's shims
    and the containers outlive containerd by design, and are found here all the same.
    """
    deadline = time.monotonic() + timeout
    own = os.getpid()
    while pids := cgroup_pids(relative) - {own}:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HostError(f"processes in cgroup {relative} do not die: {sorted(pids)[:10]}")
        time.sleep(0.05)


def remove_cgroup(relative: str, timeout: float = 10.0) -> None:
    """Remove the cgroup ``relative`` and everything below it from every hierarchy."""
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        for group in _groups_under(relative):
            try:
                group.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:  # EBUSY: a killed task is still on its way out
                busy.append(f"{group}: {exc.strerror}")
        if not busy:
            return
        if time.monotonic() > deadline:
            raise HostError(f"cannot remove cgroups: {'; '.join(busy[:5])}")
        time.sleep(0.05)


# -- sysctls and processes --------------------------------------------------------------------


def read_sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone: a PID with its start
    time names one process, never a later one that reused the number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])
