"""Injected pods on the real node: apply to Ready, the downward-API refresh, request to live.

Starts a local cluster with a real node (root and Linux), the data repository as a pod and the
injector as a local webhook process, as ``tests/cluster/test_realnode_injected.py`` does, then:

- **apply to Ready**, ``--rounds`` times each, of a one-pod Deployment of ``autocrane testworkload``
  injected with: the datadeployer (classic: init container and sidecar); the datadeployer and
  watchdoghealthz (``min-ready-seconds: 0``); both as native sidecars. Median and max;
- **the downward-API refresh**: ``--patches`` annotation changes on a running pod; each from the
  patch (host clock) to the kubelet's write of the volume (the ``..data`` symlink's mtime, read in
  the pod). Median and max;
- **request to live**: ``--patches`` data version requests; each from the patch to the
  datadeployer's ``/status`` showing the version live (the refresh, its 1 s poll, the download
  and the swap).

Bounded: a few dozen pods and patches, all on this machine. Run as root from the repository root:
``.venv/bin/python bench/injected_pod_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autocrane import keys
from tests.cluster import harness, injectedkit, nodekit, webhookkit
from tests.cluster.harness import wait_until
from webhook import containers

STATUS_PORT = 8098


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s ({len(values)})"


def _apply_to_ready(cluster: harness.Cluster, namespace: str, name: str, notes: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    cluster.apps.create_namespaced_deployment(namespace, injectedkit.deployment(name, 1, notes))
    (pod,) = nodekit.ready_pods(cluster, namespace, name, 1, timeout=120)
    return time.monotonic() - started, str(pod.metadata.name)


def _status_version(ip: str) -> str | None:
    body = injectedkit.http_get(f"http://{ip}:{STATUS_PORT}/status")
    entry = json.loads(body)["sets"][injectedkit.DATA_SET] if body else {}
    return entry.get("version") if entry.get("error") is None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="pods per kind of injection (default: %(default)s)")
    parser.add_argument("--patches", type=int, default=8, help="patches per measurement (default: %(default)s)")
    ns = parser.parse_args()
    os.environ[harness.REQUIRE_REAL_NODE] = "1"

    with harness.session_cluster() as cluster:
        plane = harness.current_control_plane()
        assert plane is not None and plane.node is not None
        source = injectedkit.ArchiveServer(plane.node.claim.host_address)
        repo_ns = injectedkit.create_restricted_namespace(cluster, "datarepo", inject=False)
        content = source.publish("v1")
        repository = injectedkit.RepositoryPod(cluster, repo_ns, source).start()
        first = repository.packed(content, "v1")
        sidecar = injectedkit.autocrane_images()["sidecar"]
        settings = {"datadeployer_image": sidecar, "watchdoghealthz_image": sidecar, "image_pull_policy": "Never",
                    "data_repository_url": repository.url, "datadeployer_status_port": str(STATUS_PORT)}
        with webhookkit.registered(cluster, Path(tempfile.mkdtemp(prefix="bench-injector-")), settings):
            namespace = injectedkit.create_restricted_namespace(cluster, "bench", inject=True)
            data = injectedkit.data_annotations(first)
            kinds = {"datadeployer": data,
                     "datadeployer + watchdoghealthz": {**data, keys.MIN_READY_SECONDS: "0"},
                     "both, native sidecars": {**data, keys.MIN_READY_SECONDS: "0",
                                               keys.NATIVE_SIDECAR: "true"}}
            pod, name = "", ""
            for k, (kind, notes) in enumerate(kinds.items()):
                times = []
                for i in range(ns.rounds):
                    if name:  # one pod at a time: the figures are for a quiet node
                        cluster.apps.delete_namespaced_deployment(name, namespace)
                    name = f"app-{k}-{i}"
                    seconds, pod = _apply_to_ready(cluster, namespace, name, notes)
                    times.append(seconds)
                print(f"apply to Ready, {kind}: {_summary(times)}", flush=True)

            def written_at() -> float:
                return injectedkit.downward_api_written_at(cluster, namespace, pod, containers.DATADEPLOYER)

            refresh = []
            for i in range(ns.patches):
                before = written_at()
                patched = time.time()
                cluster.core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {
                    "bench.autocrane.io/patch": str(i)}}})
                written = wait_until("the kubelet's refresh", lambda b=before: (w := written_at()) != b and w,
                                     timeout=120, interval=0.2)
                refresh.append(written - patched)
            print(f"downward-API refresh after a patch: {_summary(refresh)}", flush=True)

            ip = cluster.core.read_namespaced_pod(pod, namespace).status.pod_ip
            live = []
            for i in range(ns.patches):
                version = repository.publish(f"bench-{i}")
                patched = time.monotonic()
                cluster.core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {
                    keys.REQUEST_DATA_PREFIX + injectedkit.DATA_SET: injectedkit.request_value(version)}}})
                wait_until("the version live", lambda v=version: _status_version(ip) == v["version"], timeout=120)
                live.append(time.monotonic() - patched)
            print(f"data request to live: {_summary(live)}", flush=True)
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
