"""A real node's claim on the host: what it holds, recorded, so that all of it is given back.

Everything a node makes on the host is named after its index N (0-255), so that two clusters can
run at once (``make dev`` beside ``make test``) and the record of N is all that a later run needs
to remove what a killed one left:

========================  =====================================================================
network namespace         ``NODE_DIR/netns``, a bind mount under the cluster directory
veth pair                 ``acnodeN`` on the host (10.243.N.1/30), ``eth0`` in the namespace (.2)
pod subnet                10.244.N.0/24 on the node's bridge, routed by the host to 10.243.N.2
cgroups                   ``/autocrane-devcluster-N`` in every hierarchy: containerd and its shims,
                          the kubelet, kube-proxy, CoreDNS (in ``.../node``) and the pods
CNI network               ``devcluster-N`` (its result cache in /var/lib/cni/results is named after it)
========================  =====================================================================

Claims are JSON files in :data:`REGISTRY`, changed under a lock. A claim whose owner (a process
and its start time, on this boot) is gone is stale: the next claim, or ``python -m devcluster
sweep``, releases it. Releasing kills the cgroup's processes, detaches every mount under the node
directory, deletes the veth (and with the namespace gone, the bridge, the pods' veths and every
iptables rule the node wrote, which all live in it), removes the cgroups and the files the kubelet
and containerd write where no setting moves them. What is shared by all nodes on the host (the
kernel settings the kubelet changes, the directories it creates) is recorded by the first claim
and put back by the last release.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from devcluster import linuxhost

REGISTRY = Path("/var/lib/autocrane-devcluster")
MAX_NODES = 256
LINK_PREFIX = 30
"""The veth pair's subnet: 10.243.N.0/30, the host at .1, the node at .2."""

KUBELET_TUNABLES = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
                    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes")
"""Host-wide kernel settings every kubelet sets at start (``setupKernelTunables``), recorded first."""

DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
"""Hard-coded in the kubelet (``pluginapi.DevicePluginPath``), whatever its ``--root-dir``."""
DEVICE_PLUGIN_FILES = ("kubelet.sock", "kubelet_internal_checkpoint")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
"""Hard-coded in the kubelet: a symlink per container into its pod logs directory."""
CNI_RESULTS = Path("/var/lib/cni/results")
"""libcni's cache of ADD results; containerd 1.6 has no setting for it."""
SHIM_SOCKETS = Path("/run/containerd/s")
"""containerd 1.6's shims listen here whatever its ``state`` (``shim.SocketAddress``)."""
SHARED_DIRECTORIES = (Path("/var/lib/kubelet"), DEVICE_PLUGINS, CONTAINER_LOG_LINKS, Path("/var/lib/cni"),
                      CNI_RESULTS, Path("/run/containerd"), SHIM_SOCKETS)
"""Directories outside the cluster directory that nodes create; removed by the last release if it
was the first claim that found them missing."""


class NodeUnavailable(linuxhost.HostError):
    """This host cannot run a real node (the reason is the message)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """One node's hold on the host; every name it has there derives from ``index``."""

    index: int
    node_dir: Path
    owner_pid: int
    owner_start: int
    boot_id: str

    @property
    def host_address(self) -> str:
        """The host's end of the veth: the API server listens here."""
        return f"10.243.{self.index}.1"

    @property
    def node_address(self) -> str:
        """The node's InternalIP, inside its namespace."""
        return f"10.243.{self.index}.2"

    @property
    def pod_subnet(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def bridge_address(self) -> str:
        """The pods' gateway: the node's bridge."""
        return f"10.244.{self.index}.1"

    @property
    def host_link(self) -> str:
        return f"acnode{self.index}"

    @property
    def cgroup(self) -> str:
        """The kubelet's ``cgroupRoot``: kubepods and the node's own processes."""
        return f"autocrane-devcluster-{self.index}"

    @property
    def daemons_cgroup(self) -> str:
        """containerd (and so its shims), the kubelet, kube-proxy, CoreDNS."""
        return f"{self.cgroup}/node"

    @property
    def cni_network(self) -> str:
        return f"devcluster-{self.index}"

    @property
    def netns(self) -> Path:
        return self.node_dir / "netns"

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd" / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.node_dir / "containerd" / "state"

    @property
    def pod_logs(self) -> Path:
        return self.node_dir / "kubelet" / "pod-logs"

    def record(self) -> dict[str, object]:
        return {"index": self.index, "node_dir": str(self.node_dir), "owner_pid": self.owner_pid,
                "owner_start": self.owner_start, "boot_id": self.boot_id}

    @classmethod
    def from_record(cls, data: dict[str, object]) -> Claim:
        return cls(int(str(data["index"])), Path(str(data["node_dir"])), int(str(data["owner_pid"])),
                   int(str(data["owner_start"])), str(data["boot_id"]))

    def is_live(self, boot_id: str, start_of: Callable[[int], int | None]) -> bool:
        """Whether the process that made the claim still runs (same boot, same PID and start time)."""
        return self.boot_id == boot_id and start_of(self.owner_pid) == self.owner_start


def networks_of(index: int) -> list[ipaddress.IPv4Network]:
    return [ipaddress.IPv4Network(f"10.243.{index}.0/30"), ipaddress.IPv4Network(f"10.244.{index}.0/24")]


def free_index(claimed: Iterable[int], taken: Iterable[ipaddress.IPv4Network],
               link_exists: Callable[[str], bool]) -> int:
    """The lowest index whose networks no route or address of the host overlaps and whose link is free."""
    claimed, taken = set(claimed), list(taken)
    for index in range(MAX_NODES):
        if index in claimed or link_exists(f"acnode{index}"):
            continue
        if not any(mine.overlaps(other) for mine in networks_of(index) for other in taken):
            return index
    raise NodeUnavailable(f"no free node network: 10.243.0.0/16 and 10.244.0.0/16 are in use ({MAX_NODES} tried)")


def _host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host routes or has an address in (the default route aside)."""
    found = []
    for line in linuxhost.run(["ip", "-4", "-o", "route", "show", "table", "all"]).splitlines():
        words = line.split()[:2]  # "DST ..." or "TYPE DST ..." (local, broadcast, unreachable, ...)
        for word in words:
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(word, strict=False))
                break
    for line in linuxhost.run(["ip", "-4", "-o", "addr"]).splitlines():
        with contextlib.suppress(ValueError, IndexError):
            found.append(ipaddress.IPv4Interface(line.split()[3]).network)
    return found


def create(claim: Claim) -> None:
    """Make the node's namespace, veth pair, route and cgroups (what :func:`release` removes).

    The namespace gets no default route: the pods' default route leads to the node's bridge and
    ends there, so nothing from the node or its pods is routed off the machine. The host routes
    the pod subnet to the node, and forwards nothing itself (its ``ip_forward`` is untouched).
    """
    linuxhost.create_netns(claim.netns)
    inside = functools.partial(linuxhost.in_netns, claim.netns)
    if not linuxhost.link_exists(claim.host_link):
        # Made inside and moved out: `ip` names a namespace by /run/netns name or PID, not by file.
        inside("ip", "link", "add", "eth0", "type", "veth", "peer", "name", claim.host_link)
        inside("ip", "link", "set", claim.host_link, "netns", str(os.getpid()))
    for name in (f"net.ipv6.conf.{claim.host_link}.disable_ipv6",):  # per link: goes with it
        linuxhost.write_sysctl(name, "1")
    linuxhost.run(["ip", "addr", "replace", f"{claim.host_address}/{LINK_PREFIX}", "dev", claim.host_link])
    linuxhost.run(["ip", "link", "set", claim.host_link, "up"])
    inside("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    inside("ip", "addr", "replace", f"{claim.node_address}/{LINK_PREFIX}", "dev", "eth0")
    inside("ip", "link", "set", "eth0", "up")
    inside("ip", "link", "set", "lo", "up")
    linuxhost.run(["ip", "route", "replace", claim.pod_subnet, "via", claim.node_address, "dev", claim.host_link])
    linuxhost.create_cgroup(claim.daemons_cgroup)


# -- the registry -------------------------------------------------------------------------------


class Registry:
    """The claims of this host, in ``root`` (:data:`REGISTRY`)."""

    def __init__(self, root: Path = REGISTRY) -> None:
        self.root = root

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        while True:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the last release removes the lock file: if it did while we waited, lock the new one
                if os.fstat(fd).st_ino == os.stat(self.root / "lock").st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)

    def _claims(self) -> list[Claim]:
        claims = []
        for path in sorted(self.root.glob("node-*.json")):
            try:
                claims.append(Claim.from_record(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError) as exc:
                raise linuxhost.HostError(f"unreadable node claim {path}: {exc}; remove it by hand") from exc
        return claims

    def _path(self, claim: Claim) -> Path:
        return self.root / f"node-{claim.index}.json"

    def claim(self, node_dir: Path) -> Claim:
        """Sweep stale claims, then claim the lowest free index for a node in ``node_dir``."""
        with self._locked():
            self._sweep_locked()
            claims = self._claims()
            if not claims:
                if (DEVICE_PLUGINS / "kubelet.sock").exists():
                    raise NodeUnavailable(f"another kubelet runs on this host ({DEVICE_PLUGINS}/kubelet.sock "
                                          "exists): two kubelets would share that directory")
                self._record_host()
            me = os.getpid()
            index = free_index((c.index for c in claims), _host_networks(), linuxhost.link_exists)
            claim = Claim(index, node_dir, me, linuxhost.process_start(me) or 0, linuxhost.boot_id())
            self._path(claim).write_text(json.dumps(claim.record(), indent=2))
            return claim

    def release(self, claim: Claim) -> None:
        """Remove everything ``claim`` made; the last release also restores what nodes share."""
        with self._locked():
            release(claim)
            left = leftovers(claim)
            if left:  # keep the record: the next sweep tries again
                raise linuxhost.HostError(f"real node {claim.index} left after its release: {', '.join(left[:10])}")
            self._path(claim).unlink(missing_ok=True)
            self._last_out()
            self._remove_if_unused()

    def live(self) -> list[Claim]:
        """The claims whose owners still run: this run's nodes and other clusters' on this host."""
        if not self.root.exists():
            return []
        with self._locked():
            boot = linuxhost.boot_id()
            return [c for c in self._claims() if c.is_live(boot, linuxhost.process_start)]

    def sweep(self) -> list[Claim]:
        """Release every stale claim (a run killed before it could); returns them."""
        if not self.root.exists():
            return []
        with self._locked():
            stale = self._sweep_locked()
            self._remove_if_unused()
            return stale

    def _sweep_locked(self) -> list[Claim]:
        boot = linuxhost.boot_id()
        stale = [c for c in self._claims() if not c.is_live(boot, linuxhost.process_start)]
        for claim in stale:
            print(f"devcluster: releasing the real node a killed run left (index {claim.index}, {claim.node_dir})",
                  file=sys.stderr, flush=True)
            release(claim)
            self._path(claim).unlink(missing_ok=True)
        if stale:
            self._last_out()
        return stale

    def _record_host(self) -> None:
        state = {"boot_id": linuxhost.boot_id(),
                 "sysctls": {name: linuxhost.read_sysctl(name) for name in KUBELET_TUNABLES},
                 "created": [str(d) for d in SHARED_DIRECTORIES if not d.exists()]}
        (self.root / "host.json").write_text(json.dumps(state, indent=2))

    def _last_out(self) -> None:
        """With no claim left: restore the kernel settings, remove shared directories nodes made."""
        if self._claims():
            return
        host = self.root / "host.json"
        if host.exists():
            state = json.loads(host.read_text())
            if state.get("boot_id") == linuxhost.boot_id():
                for name, value in state.get("sysctls", {}).items():
                    if linuxhost.read_sysctl(name) != value:
                        linuxhost.write_sysctl(name, value)
            remove_shared_directories(Path(p) for p in state.get("created", []))
            host.unlink()

    def _remove_if_unused(self) -> None:
        """With no claim left, remove the registry itself: last in a locked section, never before a claim
        (a start that swept a killed run's only node goes on to record the host in it)."""
        if self._claims() or (self.root / "host.json").exists():
            return
        (self.root / "lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.root.rmdir()


def remove_shared_directories(created: Iterable[Path]) -> None:
    """Remove the shared directories nodes created, deepest first, if nothing but theirs is inside."""
    for directory in sorted(created, key=lambda p: len(p.parts), reverse=True):
        if directory == DEVICE_PLUGINS:
            for name in DEVICE_PLUGIN_FILES:
                (directory / name).unlink(missing_ok=True)
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            print(f"devcluster: leaving {directory}: something else was put in it", file=sys.stderr)


# -- releasing one claim ------------------------------------------------------------------------


def shim_socket(containerd_socket: Path, namespace: str, task: str) -> Path:
    """Where containerd 1.6 puts a task's shim socket: ``/run/containerd/s/sha256(address/ns/id)``."""
    return SHIM_SOCKETS / hashlib.sha256(f"{containerd_socket}/{namespace}/{task}".encode()).hexdigest()


def _tasks(claim: Claim) -> list[tuple[str, str]]:
    """(namespace, id) of every task containerd has a directory for (all the running ones)."""
    tasks = claim.containerd_state / "io.containerd.runtime.v2.task"
    if not tasks.is_dir():
        return []
    return [(ns.name, task.name) for ns in tasks.iterdir() if ns.is_dir() for task in ns.iterdir()]


def _shim_sockets(claim: Claim) -> list[Path]:
    return [shim_socket(claim.containerd_socket, ns, task) for ns, task in _tasks(claim)]


def _own_log_links(claim: Claim) -> list[Path]:
    if not CONTAINER_LOG_LINKS.is_dir():
        return []
    prefix = str(claim.pod_logs) + "/"
    return [link for link in CONTAINER_LOG_LINKS.iterdir()
            if link.is_symlink() and os.readlink(link).startswith(prefix)]


def _own_cni_results(claim: Claim) -> list[Path]:
    """Results of our network (``devcluster-N-<sandbox>-eth0``) and of containerd's loopback for
    the same sandboxes (``cni-loopback-<sandbox>-lo``), which only the sandbox ID tells apart."""
    if not CNI_RESULTS.is_dir():
        return []
    ours = sorted(CNI_RESULTS.glob(f"{claim.cni_network}-*"))
    sandboxes = {task for _, task in _tasks(claim)}
    sandboxes |= {p.name.removeprefix(f"{claim.cni_network}-").rpartition("-")[0] for p in ours}
    return ours + [p for s in sorted(sandboxes) if (p := CNI_RESULTS / f"cni-loopback-{s}-lo").exists()]


def release(claim: Claim) -> None:
    """Remove everything ``claim`` made on the host. Every step runs; the errors are raised together.

    Processes first (they hold mounts, the namespace and the cgroups), then the shim sockets (read
    from containerd's task directories, still on disk), the mounts, the veth, the cgroups, the files.
    """
    errors: list[str] = []

    def step(what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except (OSError, linuxhost.HostError) as exc:
            errors.append(f"{what}: {exc}")

    step("kill the node's processes", lambda: linuxhost.kill_cgroup(claim.cgroup))
    for socket in _shim_sockets(claim):
        step(f"remove {socket}", functools.partial(socket.unlink, missing_ok=True))
    step(f"unmount {claim.node_dir}", lambda: linuxhost.unmount_all_under(claim.node_dir))
    step(f"delete {claim.host_link}", lambda: linuxhost.delete_link(claim.host_link))
    step("remove the cgroups", lambda: linuxhost.remove_cgroup(claim.cgroup))
    for path in _own_log_links(claim) + _own_cni_results(claim):
        step(f"remove {path}", functools.partial(path.unlink, missing_ok=True))
    if errors:
        raise linuxhost.HostError(f"releasing real node {claim.index} left things behind:\n  " + "\n  ".join(errors))


def leftovers(claim: Claim) -> list[str]:
    """What of ``claim`` is still on the host (empty after a release): for checks and tests."""
    found = [f"mount {p}" for p in linuxhost.mounts_under(claim.node_dir)]
    found += [f"process {p}" for p in sorted(linuxhost.cgroup_pids(claim.cgroup))]
    found += [f"cgroup {h / claim.cgroup}" for h in linuxhost.cgroup_hierarchies() if (h / claim.cgroup).exists()]
    found += [f"link {claim.host_link}"] if linuxhost.link_exists(claim.host_link) else []
    found += [f"file {p}" for p in _own_log_links(claim) + _own_cni_results(claim) + _shim_sockets(claim)
              if p.exists() or p.is_symlink()]
    return found
