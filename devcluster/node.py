"""The real node: a kubelet that runs containers, beside the KWOK nodes of the local cluster.

kubelet and kube-proxy v1.34 and CoreDNS (built from Go modules, :mod:`devcluster.build`) and
containerd, runc and the CNI plugins (OS packages) run in a network namespace of the node's own,
joined to the host by a veth pair (:mod:`devcluster.nodeclaim` names and removes all of it):

- **Network.** The node is 10.243.N.2; the host end of the veth, 10.243.N.1, is where the API
  server listens. Pods get 10.244.N.0/24 on a CNI bridge in the namespace (its gateway); the host
  routes that subnet to the node, so tests on the host reach pod IPs. The namespace has no default
  route and the host forwards nothing, so nothing leaves the machine. kube-proxy (iptables mode)
  writes its rules in the namespace only; CoreDNS answers ``cluster.local`` (and nothing else) behind
  the ``kube-dns`` Service at :data:`DNS_SERVICE_IP`; pods reach the API server through the
  ``kubernetes`` Service, whose endpoint the API server publishes itself.
- **Processes** join only the node's network namespace and cgroup (``setns`` before exec), never a
  new mount namespace, so the kubelet's volume mounts are the ones runc sees. containerd has its own
  config, root, state, runc root and sockets under the node directory; the kubelet its root, logs
  and certificates there too. Both leave the OOM score alone (root here lacks CAP_SYS_RESOURCE).
- **Steering.** The node registers with the taint :data:`TAINT` and the label ``type=real``: only
  pods that tolerate it and select it run here (:func:`placement`); KWOK nodes keep ``type=kwok``.
- **Images** come from archives imported into its containerd: the pause and toolbox images
  (:mod:`devcluster.nodeimages`) and AutoCrane's (``devcluster.images.ensure_images()``).

See docs/real-node.md for how to use it and what stopping it removes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from devcluster import build, certs, hostpackages, images, linuxhost, nodeclaim, nodeimages

if TYPE_CHECKING:
    from devcluster.controlplane import ControlPlane

NODE_NAME = "real-node"
LABELS = {"type": "real"}
TAINT = {"key": "devcluster.autocrane.io/real-node", "effect": "NoSchedule"}
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
OS_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "iproute2", "buildah")
"""What the node runs on, and buildah for its images (:mod:`devcluster.nodeimages`)."""
CNI_BIN_DIR = "/usr/lib/cni"
READY_PORT = 8181
"""CoreDNS's readiness endpoint, on the node's address."""
PROXY_HEALTH_PORT = 10256

Mode = Literal["off", "auto", "required"]
"""``auto``: start the node where it can run, else say why and go on without it; ``required``: fail."""


class NodeError(RuntimeError):
    """The real node could not start (what failed, with the tail of its log)."""


class ImageArchive(Protocol):
    """An image for the node (``devcluster.images.Image`` and :class:`nodeimages.NodeImage`)."""

    @property
    def ref(self) -> str: ...

    @property
    def archive(self) -> Path: ...


def placement() -> dict[str, object]:
    """What a pod spec needs to run on the real node (KWOK pods need neither, and never land here)."""
    return {"nodeSelector": dict(LABELS), "tolerations": [{**TAINT, "operator": "Exists"}]}


def unavailable_reason() -> str | None:
    """Why this host cannot run the real node, or None. Installs its OS packages when missing."""
    if sys.platform != "linux":
        return f"the real node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the real node needs root (it makes a network namespace, cgroups and mounts)"
    if not linuxhost.cgroup_hierarchies():
        return "no cgroup hierarchy is mounted"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` (util-linux) is missing"
    try:
        hostpackages.ensure(OS_PACKAGES, why="the real node")
    except hostpackages.MissingPackages as exc:
        return str(exc)
    return None


def app_images() -> list[ImageArchive]:
    """AutoCrane's images (``devcluster.images``), built unless cached."""
    return list(images.ensure_images())


def prepare(mode: Mode, node_dir: Path) -> tuple[nodeclaim.Claim | None, str]:
    """Build what the node needs and claim its place on the host, or say why there is no node.

    Returns the claim (its network is up: the API server binds to its host address) and a line
    for the cluster's summary. ``off`` returns (None, ...) at once; ``required`` raises.
    """
    if mode == "off":
        return None, "real node: off"
    reason = unavailable_reason()
    claim = None
    if reason is None:
        try:
            claim = nodeclaim.Registry().claim(node_dir)
        except nodeclaim.NodeUnavailable as exc:
            reason = str(exc)
    if reason is not None:
        if mode == "required":
            raise NodeError(f"the real node is required (AUTOCRANE_REQUIRE_REAL_NODE) but cannot run: {reason}")
        print(f"devcluster: starting without the real node: {reason}", file=sys.stderr, flush=True)
        return None, f"real node: not started ({reason})"
    assert claim is not None
    try:
        build.ensure_binaries(only=["node", "coredns"])
        nodeclaim.create(claim)
    except BaseException:
        nodeclaim.Registry().release(claim)
        raise
    return claim, f"real node: {NODE_NAME} at {claim.node_address}"


class RealNode:
    """The node's processes and configuration, started into a booted :class:`ControlPlane`."""

    def __init__(self, plane: ControlPlane, claim: nodeclaim.Claim, *, with_app_images: bool = True) -> None:
        self.plane = plane
        self.claim = claim
        self.dir = claim.node_dir
        self.with_app_images = with_app_images
        self.images: list[ImageArchive] = []
        self.bin = build.bin_dir()
        self.start_seconds = 0.0
        """From containerd's start to the node Ready with kube-proxy and CoreDNS answering."""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        pause, *tools = nodeimages.ensure_all()
        self.images = [pause, *tools, *(app_images() if self.with_app_images else [])]
        self._write_credentials()
        self._start_containerd(pause.ref)
        for image in self.images:
            self._ctr("images", "import", str(image.archive))
        self._create_dns_objects()
        self._start_kubelet()
        registered = f"/api/v1/nodes/{NODE_NAME}"
        self.plane.wait(f"node {NODE_NAME} to register", lambda: self.plane.get(registered) is not None)
        self._start_kube_proxy()
        self._start_coredns()
        self.plane.wait(f"node {NODE_NAME} Ready", self._ready)
        address = self.claim.node_address
        self.plane.wait("kube-proxy /healthz", lambda: self.plane.http_ok(f"http://{address}:{PROXY_HEALTH_PORT}/healthz"))
        self.plane.wait("CoreDNS /ready", lambda: self.plane.http_ok(f"http://{address}:{READY_PORT}/ready"))
        self.start_seconds = time.monotonic() - started

    def _ready(self) -> bool:
        node = self.plane.get(f"/api/v1/nodes/{NODE_NAME}") or {}
        status, spec = node.get("status", {}), node.get("spec", {})
        conditions = status.get("conditions", []) if isinstance(status, dict) else []
        taints = spec.get("taints", []) if isinstance(spec, dict) else []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions) and not any(
            t.get("key", "").startswith("node.kubernetes.io/") for t in taints)

    def describe(self) -> str:
        node = self.plane.get(f"/api/v1/nodes/{NODE_NAME}") or {}
        info = node.get("status", {}).get("nodeInfo", {}) if isinstance(node.get("status"), dict) else {}
        steer = json.dumps(placement())
        return (f"real node: {NODE_NAME} (kubelet {info.get('kubeletVersion')}, {info.get('containerRuntimeVersion')}) "
                f"at {self.claim.node_address}, pods {self.claim.pod_subnet}, Ready in {self.start_seconds:.1f}s\n"
                f"  pods run there with {steer}\n"
                f"  images: {', '.join(i.ref for i in self.images)}\n"
                f"  a shell in its network namespace: nsenter --net={self.claim.netns}")

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        netns, procs = self.claim.netns, linuxhost.cgroup_procs_files(self.claim.daemons_cgroup)

        def enter() -> None:  # in the child, before exec
            linuxhost.enter_netns(netns)
            linuxhost.join_cgroup(procs)

        self.plane.spawn_program(name, argv, preexec=enter, env=_node_env())

    def _ctr(self, *args: str) -> str:
        return linuxhost.run(["ctr", "--address", str(self.claim.containerd_socket), "--namespace", "k8s.io", *args])

    def _start_containerd(self, pause: str) -> None:
        sock = self.claim.containerd_socket
        if len(str(sock)) + len(".ttrpc") > 100:
            raise NodeError(f"the cluster directory's path is too long for a unix socket: {sock}")
        cni = self.dir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-devcluster.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = self.dir / "containerd" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(_containerd_config(self.dir / "containerd", cni, pause))
        self._spawn("containerd", ["containerd", "--config", str(config)])
        self.plane.wait("containerd", lambda: _succeeds(lambda: self._ctr("version")))

    def _cni_config(self) -> dict[str, object]:
        # isGateway: the bridge is the pods' default route; ip_forward is set in the node's
        # namespace only, which has no route off the machine. No masquerading: pod IPs stay theirs.
        return {"cniVersion": "1.0.0", "name": self.claim.cni_network, "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(self.dir / "cni" / "ipam"),
                     "ranges": [[{"subnet": self.claim.pod_subnet, "gateway": self.claim.bridge_address}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
        }]}

    def _start_kubelet(self) -> None:
        kubelet = self.dir / "kubelet"
        config = kubelet / "config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(self._kubelet_config(), indent=2))
        self._spawn("kubelet", [
            str(self.bin / "kubelet"), f"--config={config}", f"--kubeconfig={kubelet / 'kubeconfig'}",
            f"--root-dir={kubelet / 'root'}", f"--cert-dir={kubelet / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={self.claim.node_address}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in LABELS.items()), "-v=1",
        ])

    def _kubelet_config(self) -> dict[str, object]:
        kubelet, pki = self.dir / "kubelet", self.plane.pki
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": self.claim.node_address, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": str(kubelet / "serving.crt"), "tlsPrivateKeyFile": str(kubelet / "serving.key"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki.ca_cert)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.claim.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.claim.cgroup}",  # two kubelets must not share /kubepods
            "failSwapOn": False, "failCgroupV1": False,
            "oomScoreAdj": 0,  # root lacks CAP_SYS_RESOURCE here: -999 would fail
            "makeIPTablesUtilChains": False,  # kube-proxy owns iptables
            "podLogsDir": str(self.claim.pod_logs),
            "volumePluginDir": str(kubelet / "volume-plugins"),  # else /usr/libexec/kubernetes
            "resolvConf": "",  # pods get the cluster's DNS only, never the host's resolvers
            "clusterDNS": [DNS_SERVICE_IP], "clusterDomain": CLUSTER_DOMAIN,
            "registerWithTaints": [TAINT],
            # No registry can give an image back: never collect one, evict only when really full.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "shutdownGracePeriod": "0s",
            # A pod's Secret and ConfigMap volumes are rewritten when the kubelet resyncs it: every
            # syncFrequency (1 min by default) plus up to half again of jitter. 10 s lets the tests of
            # certificate renewals wait seconds, not minutes; docs/injector.md gives both figures.
            "syncFrequency": "10s",
        }

    def _start_kube_proxy(self) -> None:
        directory = self.dir / "kube-proxy"
        config = directory / "config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(directory / "kubeconfig")},
            "hostnameOverride": NODE_NAME, "mode": "iptables", "clusterCIDR": self.claim.pod_subnet,
            "healthzBindAddress": f"{self.claim.node_address}:{PROXY_HEALTH_PORT}",
            "metricsBindAddress": "127.0.0.1:10249", "nodePortAddresses": ["primary"],
            "oomScoreAdj": 0,
            # 0 leaves each conntrack setting as it is: nf_conntrack_max is host-wide.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }, indent=2))
        self._spawn("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={config}", "-v=1"])

    def _start_coredns(self) -> None:
        directory = self.dir / "coredns"
        corefile = directory / "Corefile"
        corefile.parent.mkdir(parents=True, exist_ok=True)
        corefile.write_text(
            f".:53 {{\n    errors\n    ready {self.claim.node_address}:{READY_PORT}\n"
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
            f"        kubeconfig {directory / 'kubeconfig'}\n        pods insecure\n    }}\n}}\n")
        self._spawn("coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])

    # -- credentials and API objects ---------------------------------------------------------

    def _write_credentials(self) -> None:
        pki, server = self.plane.pki, self.plane.server
        kubelet = self.dir / "kubelet"
        certs.issue_serving_cert(pki, NODE_NAME, kubelet / "serving.crt", kubelet / "serving.key",
                                 ips=[self.claim.node_address], names=[NODE_NAME])
        for directory, user, group in ((kubelet, f"system:node:{NODE_NAME}", "system:nodes"),
                                       (self.dir / "kube-proxy", "system:kube-proxy", None),
                                       (self.dir / "coredns", "devcluster:coredns", None)):
            cert, key = directory / "client.crt", directory / "client.key"
            certs.issue_client_cert(pki, user, cert, key, group=group)
            certs.write_kubeconfig(directory / "kubeconfig", server, pki.ca_cert, cert, key, user=user)

    def _create_dns_objects(self) -> None:
        """The ``kube-dns`` Service (at the fixed IP pods' resolv.conf names) and CoreDNS's rights.

        CoreDNS is a process of the node, not a pod: the Service has no selector, and one
        EndpointSlice of ours points it at the node's address.
        """
        ports = [{"name": "dns", "protocol": "UDP", "port": 53}, {"name": "dns-tcp", "protocol": "TCP", "port": 53}]
        self.plane.create("/api/v1/namespaces/kube-system/services", {
            "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": DNS_SERVICE_IP, "ports": [{**p, "targetPort": 53} for p in ports]}})
        self.plane.create("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", {
            "metadata": {"name": "kube-dns-real-node", "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "devcluster.autocrane.io"}},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [self.claim.node_address], "conditions": {"ready": True},
                           "nodeName": NODE_NAME}]})
        rules = [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                  "verbs": ["list", "watch"]},
                 {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        self.plane.create(f"{rbac}/clusterroles", {"metadata": {"name": "devcluster:coredns"}, "rules": rules})
        self.plane.create(f"{rbac}/clusterrolebindings", {
            "metadata": {"name": "devcluster:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "devcluster:coredns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "devcluster:coredns"}]})


def _succeeds(action: Callable[[], object]) -> bool:
    try:
        action()
    except linuxhost.HostError:
        return False
    return True


def _node_env() -> dict[str, str]:
    """The node's processes call ip, iptables, mount and runc by name: make sure sbin is searched."""
    env = dict(os.environ)
    path = env.get("PATH", "").split(":")
    env["PATH"] = ":".join(path + [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path])
    return env


def _containerd_config(directory: Path, cni: Path, pause: str) -> str:
    # Everything under the node directory; /run/containerd/s (the shims' sockets) is the one path
    # containerd 1.6 cannot be moved off, and nodeclaim removes what its shims leave there.
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{directory}/root"
state = "{directory}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{directory}/containerd.sock"
[ttrpc]
  address = "{directory}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{directory}/opt"
[{cri}]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true        # root lacks CAP_SYS_RESOURCE: runc fails to lower the score
  netns_mounts_under_state_dir = true  # else pods' namespaces are bound under /run/netns
  disable_apparmor = true              # else containerd loads its profile into the host's kernel
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{directory}/runc"      # else /run/containerd/runc, shared with any other containerd
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni}/net.d"
    max_conf_num = 1
"""
