"""The controller at 10,000 pods: memory, a full probe pass, steady-state writes, failure-to-status time.

Runs the real controller code (informer store folding, the prober over real HTTP, health patches,
the eviction plan, the pass loop) in this process, without an API server: pods are synthetic
~5 KiB pod JSON objects fed to ``PodInformer.apply`` as watch events, and the writer is a stub
that counts what the controller would send. Each pod has its own loopback IP in 127.16.0.0/16
(every 127/8 address is local) and a watchdog served by one asyncio server listening on all of
those IPs, so every probe is a real TCP connection to a distinct address, as in a cluster.

What it reports:

- RSS after decoding N pods into the store (target <= 200 MiB at 10,000);
- time of a full probe pass (every pod probed, ``--concurrency`` at once);
- status writes in the first pass (every pod gets its first status) and in later passes
  (target 0: nothing changed, nothing is written);
- time from a watchdog starting to fail to its error status being written, with passes every
  ``--interval`` seconds (bounded by interval + one pass).

    .venv/bin/python bench/controller_bench.py                 # 10,000 pods
    .venv/bin/python bench/controller_bench.py --pods 2000 --interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from controller import passes
from controller.apiserver import informer, writer
from controller.evictions import decision as eviction
from controller.watchdogs import health, probing

FAILING: set[str] = set()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ip(i: int) -> str:
    return f"127.16.{i // 250}.{i % 250 + 1}"


def pod_json(i: int, port: int) -> dict[str, Any]:
    """A pod about as large as a real Deployment pod (managedFields, env, volumes, statuses)."""
    name = f"web-{i // 100}-{i:05d}"
    container = {"name": "app", "image": "registry.example/app:1.2.3", "ports": [{"containerPort": 8080}],
                 "env": [{"name": f"SETTING_{k}", "value": "x" * 40} for k in range(12)],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    return {
        "metadata": {
            "name": name, "namespace": "bench", "uid": f"uid-{i}", "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "web", "pod-template-hash": "abc"},
            "annotations": {"probe.autocrane.io/app": f"POD_IP:{port}/watchdog", "other.io/note": "y" * 200},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"web-{i // 100}",
                                 "uid": f"rs-{i // 100}", "controller": True}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "fieldsV1": {f"f:{k}": {} for k in range(60)}}],
        },
        "spec": {"nodeName": f"node-{i % 50}", "containers": [container, {**container, "name": "sidecar"}],
                 "volumes": [{"name": "data", "emptyDir": {}}]},
        "status": {"phase": "Running", "podIP": ip(i), "hostIP": "10.0.0.1",
                   "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                                  for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                   "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                          "image": "registry.example/app:1.2.3", "imageID": "sha256:" + "0" * 64,
                                          "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
    }


async def watchdog(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    local = writer.get_extra_info("sockname")[0]
    try:
        await reader.readuntil(b"\r\n\r\n")
        failing = local in FAILING
        body = b"broken" if failing else b"ok"
        status = b"500 Internal Server Error" if failing else b"200 OK"
        writer.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(pods: int, port: int, victim: str) -> None:
    """The watchdogs, in their own process so the controller's RSS and CPU are measured alone."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, FAILING.add, victim)
    server = await asyncio.start_server(watchdog, host=[ip(i) for i in range(pods)], port=port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


class CountingWriter(writer.Writer):
    """Counts what would be written; records when each pod's error status would be written."""

    def __init__(self) -> None:
        super().__init__(api=None, identity="bench")  # type: ignore[arg-type]
        self.writes = 0
        self.error_written: dict[str, float] = {}

    async def write_status(self, change: health.Change) -> str:
        self.writes += 1
        if change.health_label == "error":
            self.error_written[change.pod.pod_ip] = time.monotonic()
        return "ok"

    async def evict(self, decision: eviction.Decision) -> str:
        return "dry_run"

    async def event(self, *args: object, **kwargs: object) -> bool:
        return True


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    port = random.randint(20000, 45000)
    victim = ip(args.pods // 2)
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--pods", str(args.pods), "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready", "watchdog server failed"
    results: dict[str, Any] = {"pods": args.pods, "rss_start_mib": round(rss_mib(), 1)}
    store = informer.PodInformer(api=None)  # type: ignore[arg-type]
    started = time.perf_counter()
    for i in range(args.pods):
        store.apply({"type": "ADDED", "object": json.loads(json.dumps(pod_json(i, port)))})
    store.synced.set()
    gc.collect()
    results["decode_seconds"] = round(time.perf_counter() - started, 2)
    results["rss_with_store_mib"] = round(rss_mib(), 1)

    applier = CountingWriter()
    async with probing.Prober(concurrency=args.concurrency, timeout=5) as prober:
        controller = passes.Controller([store], prober, applier, eviction.Policy(), interval=args.interval)
        timed = []
        for _ in range(3):
            before = applier.writes
            t = time.perf_counter()
            await controller.run_pass()
            timed.append((round(time.perf_counter() - t, 2), applier.writes - before))
            # the informer would deliver our own patches back: fold them in as the API server would
            for key, pod in list(store.store.items()):
                if "status.autocrane.io/app" not in pod.annotations:
                    store.store[key] = pod.with_annotations(
                        {"status.autocrane.io/app": "info/2026-01-01T00:00:00Z/probe: ok"}, "info")
        results["passes_seconds_and_writes"] = timed
        results["rss_after_passes_mib"] = round(rss_mib(), 1)

        task = asyncio.create_task(controller.run())
        await asyncio.sleep(random.uniform(0, args.interval))
        server.send_signal(signal.SIGUSR1)
        failed_at = time.monotonic()
        while victim not in applier.error_written:
            await asyncio.sleep(0.01)
        results["failure_to_status_seconds"] = round(applier.error_written[victim] - failed_at, 2)
        results["interval_seconds"] = args.interval
        task.cancel()
    server.terminate()
    server.wait()
    results["rss_peak_mib"] = round(rss_mib(), 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.pods, args.port, ip(args.pods // 2)))
        return
    print(json.dumps(asyncio.run(bench(args))))


if __name__ == "__main__":
    main()
