"""Real-node test kit: pods of the toolbox image on the real node, and kubectl against them.

The toolbox image (``devcluster/gosrc/toolbox``) stands in for busybox: ``serve`` answers
``HOSTNAME PATH``; ``get``, ``lookup`` and ``incluster`` run inside a pod through ``kubectl exec``.
Every pod here passes Pod Security ``restricted`` and carries :func:`devcluster.node.placement`.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Any

from devcluster import build, node, nodeimages
from tests.cluster import harness
from tests.cluster.harness import wait_until

PORT = 8080


@functools.cache
def toolbox() -> str:
    """The toolbox image's ref (the node imported it at start)."""
    return nodeimages.ensure("toolbox").ref


def kubectl(cluster: harness.Cluster, *args: str, timeout: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(build.bin_dir() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def restricted_container(name: str, args: list[str]) -> dict[str, Any]:
    return {"name": name, "image": toolbox(), "args": args, "ports": [{"containerPort": PORT}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True}}


def pod_spec(args: list[str], *, probe: bool = True) -> dict[str, Any]:
    """A spec for the real node: one toolbox container (``serve`` with a readiness probe by default)."""
    container = restricted_container("toolbox", args)
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/ready", "port": PORT}, "periodSeconds": 1}
    return {**node.placement(), "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container]}


def deployment(name: str, replicas: int, args: list[str] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec(args or ["serve"])}}}


def ready_pods(cluster: harness.Cluster, namespace: str, app: str, count: int, timeout: float = 60.0) -> list[Any]:
    """Wait for ``count`` Ready pods of ``app`` and return them."""
    def ready() -> list[Any]:
        pods = [p for p in cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
                if p.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return pods if len(pods) == count else []

    return wait_until(f"{count} Ready pods of {app} in {namespace}", ready, timeout)


def run_in(cluster: harness.Cluster, namespace: str, pod: str, *command: str,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """``kubectl exec POD -- /toolbox COMMAND...``."""
    return kubectl(cluster, "exec", "-n", namespace, pod, "--", "/toolbox", *command, check=check)
