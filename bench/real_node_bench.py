"""The real node's figures: start to Ready, apply to Ready beside KWOK's, idle CPU and RSS.

Starts a local cluster with a real node (``devcluster.node``, root and Linux), then:

- **node start**: from containerd's start to the node Ready with kube-proxy and CoreDNS answering
  (images imported included), as ``RealNode.start`` measures it;
- **apply to Ready**: ``--rounds`` pods, each created and waited for until its Ready condition,
  alternating between the real node (a toolbox pod with an HTTP readiness probe every second)
  and a KWOK node (the baseline: the API and the scheduler alone), median and max of each;
- **a Deployment of ``--replicas``** on the real node: apply to all Ready;
- **idle**: CPU (share of one core) and RSS of kubelet, containerd, its shims, kube-proxy and
  CoreDNS over ``--idle`` seconds, with those replicas running (probes on), beside KWOK's.

Bounded: a few dozen pods, all on this machine. Run as root from the repository root:
``.venv/bin/python bench/real_node_bench.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client, config

from devcluster import controlplane, linuxhost
from tests.cluster import nodekit

_TICKS = os.sysconf("SC_CLK_TCK")


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _apply_to_ready(core: client.CoreV1Api, namespace: str, body: dict[str, object]) -> float:
    name = str(body["metadata"]["name"])  # type: ignore[index]
    started = time.monotonic()
    core.create_namespaced_pod(namespace, body)
    while not _ready(core.read_namespaced_pod(name, namespace)):
        if time.monotonic() - started > 60:
            raise SystemExit(f"pod {name} not Ready after 60 s")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    return elapsed


def _cpu_and_rss(pids: dict[str, list[int]]) -> dict[str, tuple[float, int]]:
    """CPU ticks and RSS bytes now, per program name (summed over its processes)."""
    out = {}
    for name, group in pids.items():
        ticks, rss = 0.0, 0
        for pid in group:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks += int(stat[11]) + int(stat[12])
                rss += int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                pass
        out[name] = (ticks, rss)
    return out


def _programs(plane: controlplane.ControlPlane) -> dict[str, list[int]]:
    assert plane.node is not None
    found: dict[str, list[int]] = {"kwok": [p.popen.pid for p in plane.processes if p.name == "kwok"]}
    for pid in linuxhost.cgroup_pids(plane.node.claim.daemons_cgroup):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        key = "containerd-shim" if comm.startswith("containerd-shim") else comm
        found.setdefault(key, []).append(pid)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="pods per node kind (default: %(default)s)")
    parser.add_argument("--replicas", type=int, default=4, help="Deployment size (default: %(default)s)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle sampling (default: %(default)s)")
    ns = parser.parse_args()

    options = controlplane.Options(nodes=1, real_node="required", node_app_images=False)
    with controlplane.ControlPlane.start(options) as plane:
        assert plane.node is not None
        print(f"node start to Ready: {plane.node.start_seconds:.2f} s")
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        namespace = "bench"
        core.create_namespace({"metadata": {"name": namespace}})
        plane.wait("ServiceAccount bench/default", lambda: plane.get(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/default") is not None)

        times: dict[str, list[float]] = {"real": [], "kwok": []}
        for i in range(ns.rounds):
            real = {"metadata": {"name": f"real-{i}"}, "spec": nodekit.pod_spec(["serve"])}
            kwok = {"metadata": {"name": f"kwok-{i}"}, "spec": {
                "nodeSelector": {"type": "kwok"}, "containers": [{"name": "app", "image": "registry.invalid/a:1"}]}}
            times["real"].append(_apply_to_ready(core, namespace, real))
            times["kwok"].append(_apply_to_ready(core, namespace, kwok))
        for kind, values in times.items():
            print(f"apply to Ready, {kind:4}: median {statistics.median(values):.2f} s, max {max(values):.2f} s "
                  f"({len(values)} pods)")

        started = time.monotonic()
        apps.create_namespaced_deployment(namespace, nodekit.deployment("idle", ns.replicas))
        while sum(_ready(p) for p in core.list_namespaced_pod(namespace, label_selector="app=idle").items) \
                < ns.replicas:
            time.sleep(0.05)
        print(f"Deployment of {ns.replicas} on the real node, apply to all Ready: {time.monotonic() - started:.2f} s")

        time.sleep(5)  # let the start settle
        programs = _programs(plane)
        first, t0 = _cpu_and_rss(programs), time.monotonic()
        time.sleep(ns.idle)
        last, seconds = _cpu_and_rss(programs), time.monotonic() - t0
        print(f"idle over {seconds:.0f} s with {ns.replicas} pods (readiness probes every 1 s):")
        for name in sorted(programs):
            cpu = (last[name][0] - first[name][0]) / _TICKS / seconds * 100
            print(f"  {name:16} {len(programs[name]):2} process(es)  CPU {cpu:5.2f} % of a core  "
                  f"RSS {last[name][1] / 2**20:6.1f} MiB")
        both = [n for n in ("kubelet", "containerd") if n in programs]
        cpu = sum(last[n][0] - first[n][0] for n in both) / _TICKS / seconds * 100
        print(f"  kubelet + containerd: CPU {cpu:.2f} % of a core, RSS {sum(last[n][1] for n in both) / 2**20:.1f} MiB")
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
