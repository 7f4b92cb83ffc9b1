"""The real node: containers run, kubectl reaches them, Services and DNS work, nothing leaves the machine."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
import urllib.request

import pytest

from devcluster import build, certs, controlplane, node
from tests.cluster import harness, nodekit
from tests.cluster.harness import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]


def test_node_is_ready_with_kubelet_v1_34_and_containerd(cluster: harness.Cluster, real_node: str) -> None:
    found = cluster.core.read_node(real_node)
    info = found.status.node_info
    print(f"{real_node}: kubelet {info.kubelet_version}, {info.container_runtime_version}")
    assert info.kubelet_version == build.KUBERNETES_VERSION
    assert info.container_runtime_version.startswith("containerd://")
    assert any(c.type == "Ready" and c.status == "True" for c in found.status.conditions)
    assert found.metadata.labels["type"] == "real"
    assert {"key": node.TAINT["key"], "effect": node.TAINT["effect"]} in [
        {"key": t.key, "effect": t.effect} for t in found.spec.taints]
    (internal,) = [a.address for a in found.status.addresses if a.type == "InternalIP"]
    assert not ipaddress.ip_address(internal).is_loopback


def test_a_pod_runs_and_kubectl_logs_exec_and_port_forward_reach_it(
        cluster: harness.Cluster, namespace: str, real_node: str) -> None:
    started = time.monotonic()
    cluster.apps.create_namespaced_deployment(namespace, nodekit.deployment("web", 1))
    (pod,) = nodekit.ready_pods(cluster, namespace, "web", 1)
    print(f"apply to Ready: {time.monotonic() - started:.2f}s")
    name = pod.metadata.name
    assert pod.spec.node_name == real_node

    # The host reaches the pod's own IP (routed to the node's namespace).
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:{nodekit.PORT}/from-host", timeout=5) as response:
        assert response.read().decode() == f"{name} /from-host\n"

    logs = nodekit.kubectl(cluster, "logs", "-n", namespace, name).stdout
    assert f"serving on port {nodekit.PORT}" in logs

    assert nodekit.run_in(cluster, namespace, name, "cat", "/etc/hostname").stdout.strip() == name

    local = controlplane.free_port()
    forward = subprocess.Popen([str(build.bin_dir() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}",
                                "port-forward", "-n", namespace, name, f"{local}:{nodekit.PORT}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def forwarded() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/forwarded", timeout=2) as response:
                    return response.read().decode()
            except OSError:
                assert forward.poll() is None, forward.stdout.read() if forward.stdout else ""
                return None

        assert wait_until("kubectl port-forward to answer", forwarded, 30) == f"{name} /forwarded\n"
    finally:
        forward.terminate()
        forward.communicate(timeout=10)  # reaps it and closes its pipe


def test_a_service_of_two_pods_resolves_by_dns_and_routes_to_both(
        cluster: harness.Cluster, namespace: str, real_node: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, nodekit.deployment("web", 2))
    cluster.core.create_namespaced_service(namespace, {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": nodekit.PORT}]}})
    cluster.apps.create_namespaced_deployment(namespace, nodekit.deployment("client", 1))
    backends = {p.metadata.name for p in nodekit.ready_pods(cluster, namespace, "web", 2)}
    (client,) = nodekit.ready_pods(cluster, namespace, "client", 1)
    cluster_ip = cluster.core.read_namespaced_service("web", namespace).spec.cluster_ip

    # DNS (CoreDNS's informers) and routing (kube-proxy's next sync) follow the Service within moments.
    for name in (f"web.{namespace}.svc", f"web.{namespace}.svc.cluster.local", "web"):
        wait_until(f"{name} to resolve to {cluster_ip}", lambda n=name: nodekit.run_in(
            cluster, namespace, client.metadata.name, "lookup", n, check=False).stdout.split() == [cluster_ip], 30)

    seen: set[str] = set()

    def both_answered() -> bool:
        reply = nodekit.run_in(cluster, namespace, client.metadata.name, "get", f"http://web.{namespace}.svc/x",
                               check=False)
        if reply.returncode == 0:
            seen.add(reply.stdout.split()[0])
        return seen == backends

    wait_until("the Service to route to both pods", both_answered, 60, interval=0.1)
    assert seen == backends


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(
        cluster: harness.Cluster, namespace: str, real_node: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, nodekit.deployment("client", 1))
    (client,) = nodekit.ready_pods(cluster, namespace, "client", 1)
    name = client.metadata.name

    env = nodekit.kubectl(cluster, "exec", "-n", namespace, name, "--", "/toolbox", "cat", "/proc/self/environ")
    assert f"KUBERNETES_SERVICE_HOST={certs.KUBERNETES_SERVICE_IP}" in env.stdout.split("\0")
    version = json.loads(nodekit.run_in(cluster, namespace, name, "incluster", "/version").stdout)
    assert version["gitVersion"] == cluster.server_version()
    # Authenticated as the pod's service account, which RBAC gives nothing: 403, not 401.
    denied = nodekit.run_in(cluster, namespace, name, "incluster", "/api/v1/pods", check=False)
    assert denied.returncode == 1
    assert "403 Forbidden" in denied.stderr


def test_nothing_leaves_the_machine_from_a_pod(cluster: harness.Cluster, namespace: str, real_node: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, nodekit.deployment("client", 1))
    (client,) = nodekit.ready_pods(cluster, namespace, "client", 1)
    name = client.metadata.name

    # No route off the machine: a public address and the host's own uplink network are unreachable.
    for address in ("192.0.2.1", "198.51.100.7"):
        refused = nodekit.run_in(cluster, namespace, name, "get", f"http://{address}/", check=False)
        assert refused.returncode == 1
        assert "network is unreachable" in refused.stderr, refused.stderr
    # Cluster DNS answers cluster.local only: it forwards nothing.
    outside = nodekit.run_in(cluster, namespace, name, "lookup", "deb.debian.org", check=False)
    assert outside.returncode == 1
    assert re.search(r"server misbehaving|no such host", outside.stderr), outside.stderr


def test_pods_without_the_toleration_stay_on_kwok_nodes(
        cluster: harness.Cluster, namespace: str, real_node: str) -> None:
    spec = {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    cluster.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "kwok"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "kwok"}},
                 "template": {"metadata": {"labels": {"app": "kwok"}}, "spec": spec}}})
    cluster.apps.create_namespaced_deployment(namespace, nodekit.deployment("real", 1))
    kwok = nodekit.ready_pods(cluster, namespace, "kwok", 6)
    (real,) = nodekit.ready_pods(cluster, namespace, "real", 1)

    kwok_nodes = {n.metadata.name for n in cluster.core.list_node(label_selector="type=kwok").items}
    assert {p.spec.node_name for p in kwok} <= kwok_nodes
    assert real.spec.node_name == real_node
