"""Smoke tests: the local control plane behaves like a real cluster where AutoCrane relies on it."""

from __future__ import annotations

import http.server
import ipaddress
import threading
import urllib.request

import pytest
from kubernetes.client.exceptions import ApiException

from tests.cluster import harness
from tests.cluster.harness import wait_until

pytestmark = pytest.mark.cluster

LABELS = {"app": "smoke"}


def _deployment(replicas: int) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "smoke"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def _ready_pods(cluster: harness.Cluster, namespace: str) -> list[object]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=smoke").items
    return [
        p for p in pods
        if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def _wait_ready(cluster: harness.Cluster, namespace: str, count: int) -> list[object]:
    def ready() -> list[object]:
        pods = _ready_pods(cluster, namespace)
        return pods if len(pods) == count else []

    return wait_until(f"{count} Running/Ready pods in {namespace}", ready)


def test_apiserver_is_kubernetes_1_34(cluster: harness.Cluster) -> None:
    version = cluster.server_version()
    print(f"kube-apiserver {version}")
    if cluster.local:
        assert version.startswith("v1.34.")


def test_deployment_pods_become_running_and_ready(cluster: harness.Cluster, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, _deployment(3))

    pods = _wait_ready(cluster, namespace, 3)

    assert {p.spec.node_name for p in pods} <= {n.metadata.name for n in cluster.core.list_node().items}
    deployment = wait_until("deployment status readyReplicas=3", lambda: (
        d if (d := cluster.apps.read_namespaced_deployment("smoke", namespace)).status.ready_replicas == 3 else None))
    assert deployment.status.available_replicas == 3


def test_pod_ips_are_on_loopback_so_tests_can_serve_them(cluster: harness.Cluster, namespace: str) -> None:
    if not cluster.local:
        pytest.skip("pod IPs are loopback addresses only on the local KWOK control plane")
    cluster.apps.create_namespaced_deployment(namespace, _deployment(1))
    (pod,) = _wait_ready(cluster, namespace, 1)
    pod_ip = pod.status.pod_ip
    assert ipaddress.ip_address(pod_ip).is_loopback

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"served on the pod's IP"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((pod_ip, 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://{pod_ip}:{server.server_port}/", timeout=5) as response:
            assert response.read() == b"served on the pod's IP"
    finally:
        server.shutdown()
        server.server_close()


def _evict(cluster: harness.Cluster, namespace: str, pod_name: str) -> None:
    cluster.core.create_namespaced_pod_eviction(pod_name, namespace, {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod_name, "namespace": namespace},
    })


def _pdb_settled(cluster: harness.Cluster, namespace: str, allowed: int) -> object:
    pdb = cluster.policy.read_namespaced_pod_disruption_budget("smoke", namespace)
    status = pdb.status
    if status and status.observed_generation == pdb.metadata.generation and status.disruptions_allowed == allowed:
        return pdb
    return None


def test_pdb_blocks_eviction_with_429_until_relaxed(cluster: harness.Cluster, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, _deployment(3))
    victim = _wait_ready(cluster, namespace, 3)[0].metadata.name
    cluster.policy.create_namespaced_pod_disruption_budget(namespace, {
        "metadata": {"name": "smoke"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": LABELS}},
    })
    wait_until("PDB with 0 disruptions allowed", lambda: _pdb_settled(cluster, namespace, 0))

    with pytest.raises(ApiException) as refused:
        _evict(cluster, namespace, victim)
    assert refused.value.status == 429
    assert "disruption budget" in refused.value.body

    cluster.policy.patch_namespaced_pod_disruption_budget("smoke", namespace, {"spec": {"minAvailable": 2}})
    wait_until("PDB with 1 disruption allowed", lambda: _pdb_settled(cluster, namespace, 1))
    _evict(cluster, namespace, victim)

    def replaced() -> bool:
        names = {p.metadata.name for p in _ready_pods(cluster, namespace)}
        return len(names) == 3 and victim not in names

    wait_until("the evicted pod to be gone and replaced", replaced)


def _pod(name: str, security_context: dict[str, object], pod_security: dict[str, object]) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {
            "securityContext": pod_security,
            "containers": [{"name": "app", "image": "registry.invalid/app:1", "securityContext": security_context}],
        },
    }


def test_restricted_namespace_rejects_privileged_pod_and_accepts_compliant_one(
    cluster: harness.Cluster, namespace: str
) -> None:
    enforce = {"pod-security.kubernetes.io/enforce": "restricted"}
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": enforce}})

    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(namespace, _pod("privileged", {"privileged": True}, {}))
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body

    compliant = _pod(
        "compliant",
        {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    )
    assert cluster.core.create_namespaced_pod(namespace, compliant).metadata.name == "compliant"
