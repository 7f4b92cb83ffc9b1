"""Start and stop a real, local Kubernetes control plane made of plain processes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK run on 127.0.0.1 on free
ports, each with its log in the cluster directory. KWOK plays the kubelet for a few fake nodes:
it marks scheduled pods Running/Ready and gives them IPs from a 127.0.0.0/8 range, so a test can
serve "a pod's IP" on loopback. Readiness is always a condition polled with a deadline, never a
fixed sleep, and a process that dies while we wait is reported with the tail of its log.

Used by the pytest session fixture (``tests/cluster``) and by ``python -m devcluster up``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devcluster import build, certs, linuxhost, node, nodeclaim, volumes

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/24"
"""ClusterIPs; the first is the ``kubernetes`` Service's (``certs.KUBERNETES_SERVICE_IP``)."""
DEFAULT_POD_CIDR = "127.16.0.0/16"
"""Pod IPs KWOK hands out. All of 127.0.0.0/8 routes to ``lo`` on Linux, so tests can bind them."""


class ControlPlaneError(RuntimeError):
    pass


@dataclasses.dataclass(slots=True)
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """How to shape the local cluster."""

    nodes: int = 3
    """Fake KWOK nodes to create."""
    pod_cidr: str = DEFAULT_POD_CIDR
    start_timeout: float = 120.0
    """Seconds to wait for each component to become ready."""
    pods_per_node: int = 110
    """Pod capacity of each fake node (the kubelet's default is 110)."""
    kube_api_qps: float | None = None
    """``--kube-api-qps`` of kube-controller-manager and kube-scheduler; None keeps their defaults
    (20 and 50). Raised by benchmarks that create thousands of pods (``bench/controller_kwok_bench.py``)."""
    kube_api_burst: int | None = None
    """``--kube-api-burst`` of both; None keeps their defaults (30 and 100)."""
    real_node: node.Mode = "off"
    """A real kubelet node beside the KWOK ones (:mod:`devcluster.node`): ``auto`` starts it where
    this host can run it and says why not elsewhere; ``required`` fails instead."""
    node_app_images: bool = True
    """Import AutoCrane's images into the real node (``devcluster.images``), not only its own."""
    volumes: bool = True
    """The default StorageClass and its provisioner (:mod:`devcluster.volumes`), for PersistentVolumeClaims."""

    def client_rate_flags(self) -> list[str]:
        """The ``--kube-api-qps``/``--kube-api-burst`` flags for KCM and the scheduler (none by default)."""
        flags = [] if self.kube_api_qps is None else [f"--kube-api-qps={self.kube_api_qps:g}"]
        return flags + ([] if self.kube_api_burst is None else [f"--kube-api-burst={self.kube_api_burst}"])


def _terminate(proc: Process, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
    try:
        proc.popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait()


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGKILL it when its parent dies.

    Without this a test run killed with SIGKILL would leave etcd and the apiserver running. KILL,
    not TERM: with the parent gone nobody waits for a graceful stop, and the apiserver's would wait
    ~20 s for the etcd that died with it. (The real node's containers, which outlive containerd by
    design, are released from its cgroup by the next start: ``devcluster.nodeclaim``.)
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range, not given out before.

    ``bind(0)`` would hand out an ephemeral port, the range outgoing connections use too: between
    our check and the program's own bind, one of the many connections a test run opens can take
    it ("Address already in use", seen in CI). Below that range only listeners compete.
    """
    end = _ephemeral_range_start()
    start = 20000 if end > 21000 else 1024
    with _ports_lock:
        for _ in range(2000):
            port = random.randrange(start, end)
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise ControlPlaneError(f"no free port found in {start}-{end - 1}")


def wait_for(what: str, condition: Callable[[], bool], timeout: float, *, interval: float = 0.1,
             check: Callable[[], None] | None = None) -> None:
    """Poll ``condition`` until true; ``check`` may raise to abort early (a process died)."""
    deadline = time.monotonic() + timeout
    while True:
        if check:
            check()
        if condition():
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ControlPlane:
    """A running local cluster. Use :meth:`start` as a context manager, or call :meth:`stop`."""

    def __init__(self, directory: Path, binaries: dict[str, Path], options: Options,
                 claim: nodeclaim.Claim | None = None, node_status: str = "real node: off") -> None:
        self.directory = directory
        self.binaries = binaries
        self.options = options
        self.processes: list[Process] = []
        # With a real node the apiserver listens on the host's end of its veth (an address of this
        # machine the node and its pods can reach), else on loopback. Host clients use either.
        self.address = claim.host_address if claim else "127.0.0.1"
        self.pki = certs.write_cluster_pki(directory / "pki", apiserver_ips=[self.address])
        self.api_port = free_port()
        self.server = f"https://{self.address}:{self.api_port}"
        self.node = node.RealNode(self, claim, with_app_images=options.node_app_images) if claim else None
        self.volumes = volumes.Provisioner(self) if options.volumes else None
        self.node_status = node_status
        """One line: the real node, or why there is none."""
        self.kubeconfig = directory / "kubeconfig"
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._ssl = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        self._ssl.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        # KCM and the scheduler serve /healthz with certificates they make themselves at start;
        # only liveness is read from them, so their certificate is not verified.
        self._ssl_unverified = ssl.create_default_context()
        self._ssl_unverified.check_hostname = False
        self._ssl_unverified.verify_mode = ssl.CERT_NONE

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start(cls, options: Options | None = None, *, directory: Path | None = None) -> Iterator[ControlPlane]:
        """Build (if needed) and start a cluster; stop it and remove its directory afterwards."""
        options = options or Options()
        binaries = build.ensure_binaries(only=["etcd", "kubernetes", "kwok"])
        own_dir = directory is None
        path = directory or Path(tempfile.mkdtemp(prefix="autocrane-cluster-"))
        claim: nodeclaim.Claim | None = None
        plane: ControlPlane | None = None
        try:
            try:
                claim, status = node.prepare(options.real_node, path / "node")
            except (node.NodeError, linuxhost.HostError) as exc:
                raise ControlPlaneError(str(exc)) from exc
            plane = cls(path, binaries, options, claim, status)
            try:
                plane.boot()
            except (ControlPlaneError, node.NodeError, linuxhost.HostError) as exc:
                tails = "\n".join(f"--- {p.name} ---\n{p.tail(15)}" for p in plane.processes)
                raise ControlPlaneError(f"{exc}\nlogs in {plane.logs}; last lines:\n{tails}") from exc
            yield plane
        finally:
            if plane is not None:
                plane.stop()
            if claim is not None:  # after its processes: what they leave, the release removes
                nodeclaim.Registry().release(claim)
            if own_dir:
                linuxhost.rmtree_without_mounts(path)

    def wait(self, what: str, condition: Callable[[], bool], timeout: float | None = None) -> None:
        """:func:`wait_for` ``condition`` (by default for the start timeout), failing early if a process dies."""
        wait_for(what, condition, self.options.start_timeout if timeout is None else timeout, check=self.check_alive)

    def boot(self) -> None:
        self._write_kubeconfig()
        etcd_port = self._start_etcd()
        self.wait("etcd health", lambda: self.http_ok(f"http://127.0.0.1:{etcd_port}/health"))
        self._start_apiserver(etcd_port)
        self.wait("kube-apiserver /readyz", lambda: self.http_ok(f"{self.server}/readyz"))
        kcm_port = self._start_component("kube-controller-manager", [
            "--controllers=*",
            f"--service-account-private-key-file={self.pki.sa_private_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            "--use-service-account-credentials=false",
            # Evicted pods must go quickly; KWOK deletes them, and nodes never really die here.
            "--terminated-pod-gc-threshold=100",
            # Its default, /usr/libexec/kubernetes/kubelet-plugins/volume/exec, is made at start.
            f"--flex-volume-plugin-dir={self.directory / 'kcm-flexvolume'}",
            *self.options.client_rate_flags(),
        ])
        scheduler_port = self._start_component("kube-scheduler", self.options.client_rate_flags())
        self._start_kwok()
        for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", scheduler_port)):
            self.wait(f"{name} /healthz", functools.partial(self.http_ok, f"https://127.0.0.1:{port}/healthz",
                                                             verify=False))
        self._create_nodes()
        self.wait(f"{self.options.nodes} KWOK nodes Ready", self._nodes_ready)
        # The ServiceAccount admission plugin refuses pods until KCM has made the `default` SA.
        default_sa = "/api/v1/namespaces/default/serviceaccounts/default"
        self.wait("ServiceAccount default/default", lambda: self._get(default_sa) is not None)
        if self.node is not None:
            self.node.start()
            self.node_status = self.node.describe()
        if self.volumes is not None:
            self.volumes.start()

    def stop(self) -> None:
        """Stop every process, newest first, each before the next: SIGTERM, then SIGKILL after a grace period.

        One at a time because each may need those started before it to stop well: the apiserver
        withdraws its ``kubernetes`` endpoint from etcd (with etcd gone it waits out the grace period).
        """
        if self.volumes is not None:
            self.volumes.stop()
        for proc in reversed(self.processes):
            _terminate(proc)
        self.processes.clear()

    def stop_program(self, proc: Process) -> None:
        """Stop one program started with :meth:`spawn_program` while the cluster keeps running."""
        _terminate(proc)
        self.processes.remove(proc)

    def check_alive(self) -> None:
        for proc in self.processes:
            code = proc.popen.poll()
            if code is not None:
                raise ControlPlaneError(f"{proc.name} exited with {code}; last log lines:\n{proc.tail()}")

    def version(self) -> str:
        info = self._get("/version")
        return str(info["gitVersion"]) if info else "unknown"

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> Process:
        return self.spawn_program(name, [str(self.binaries[name]), *args])

    def spawn_program(self, name: str, argv: list[str], *, preexec: Callable[[], None] | None = None,
                      env: dict[str, str] | None = None) -> Process:
        """Run ``argv`` as part of the cluster: logged to ``logs/NAME.log``, stopped by :meth:`stop`.

        ``preexec`` runs in the child before exec (the real node's processes enter its namespace).
        """
        log = self.logs / f"{name}.log"
        handle = log.open("ab")

        def before_exec() -> None:
            _die_with_parent()
            if preexec is not None:
                preexec()

        popen = subprocess.Popen(
            argv,
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=self.directory, start_new_session=True, preexec_fn=before_exec,
        )
        handle.close()
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> int:
        client, peer = free_port(), free_port()
        self._spawn("etcd", [
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--name=default",
            "--unsafe-no-fsync=true",  # a test cluster: speed over durability
            "--log-level=warn",
        ])
        return client

    def _start_apiserver(self, etcd_port: int) -> None:
        pki = self.pki
        # Loopback cannot be a Service endpoint: without a real node nothing needs the `kubernetes`
        # Service's endpoint; with one, the apiserver publishes its address toward the node itself.
        endpoints = ["--endpoint-reconciler-type=none"] if self.node is None else []
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.directory / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            # Default admission plugins stay on (MutatingAdmissionWebhook, PodSecurity, ...); name
            # the ones AutoCrane relies on so a changed default cannot silently turn them off.
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,"
            "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            # kubectl logs, exec and port-forward: the apiserver calls the kubelet, both sides verified.
            f"--kubelet-client-certificate={pki.kubelet_client_cert}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            # Webhooks behind a Service (the chart's injector) are called at a ready endpoint's pod
            # IP, not the ClusterIP: the host routes the pod subnet to the real node, but ClusterIPs
            # exist only in the node's kube-proxy rules (from the host one would take the default route).
            "--enable-aggregator-routing=true",
            *endpoints,
        ])

    def _start_component(self, name: str, extra: list[str]) -> int:
        port = free_port()
        self._spawn(name, [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            *extra,
        ])
        return port

    def _start_kwok(self) -> None:
        # An empty config: KWOK would otherwise read ~/.kwok/kwok.yaml, and use its built-in stages.
        config = self.directory / "kwok.yaml"
        config.write_text("")
        self._spawn("kwok", [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={config}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={self.options.pod_cidr}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
        ])

    # -- API helpers (stdlib only: the launcher must not depend on the client under test) -----

    def _write_kubeconfig(self) -> None:
        certs.write_kubeconfig(self.kubeconfig, self.server, self.pki.ca_cert, self.pki.admin_cert, self.pki.admin_key)

    def http_ok(self, url: str, *, verify: bool = True) -> bool:
        """Whether ``url`` answers 200 (https with the admin client cert; ``verify=False``: any cert)."""
        context = (self._ssl if verify else self._ssl_unverified) if url.startswith("https") else None
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _request(self, method: str, path: str, body: object | None = None) -> Any:
        """The decoded JSON answer (None for 404)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._ssl) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ControlPlaneError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc

    def create(self, path: str, body: dict[str, object]) -> None:
        """POST ``body`` to the API path (admin credentials)."""
        self._request("POST", path, body)

    def delete(self, path: str) -> None:
        """DELETE the API path (admin credentials); already gone is fine."""
        self._request("DELETE", path)

    def get(self, path: str) -> dict[str, Any] | None:
        """GET an API path; None when it does not exist."""
        return self._get(path)

    def _get(self, path: str) -> dict[str, Any] | None:
        result = self._request("GET", path)
        return result if isinstance(result, dict) else None

    def _create_nodes(self) -> None:
        capacity = {"cpu": "32", "memory": "256Gi", "pods": str(self.options.pods_per_node)}
        for i in range(self.options.nodes):
            name = f"kwok-node-{i}"
            self._request("POST", "/api/v1/nodes", {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                               "kubernetes.io/arch": "amd64", "type": "kwok"},
                },
                "status": {"capacity": capacity, "allocatable": capacity},
            })

    def _nodes_ready(self) -> bool:
        nodes = self._get("/api/v1/nodes")
        items = nodes.get("items", []) if nodes else []
        ready = 0
        for item in items if isinstance(items, list) else []:
            conditions = item.get("status", {}).get("conditions", [])
            taints = item.get("spec", {}).get("taints", [])
            # The node-lifecycle controller removes its not-ready taints only after KWOK's heartbeat.
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not any(
                t.get("key", "").startswith("node.kubernetes.io/not-ready") for t in taints
            ):
                ready += 1
        return ready >= self.options.nodes


def environment_summary(plane: ControlPlane) -> str:
    lines = [f"kube-apiserver {plane.version()} at {plane.server}", f"kubeconfig: {plane.kubeconfig}",
             f"logs: {plane.logs}", plane.node_status]
    return os.linesep.join(lines)
