"""The webhook's memory while it admits pods with 1 MB values, against ordinary pods side by side.

Two ``autocrane webhook`` processes run at once, as deployed (TLS, JSON logs at info level to
/dev/null, one worker each), and each admits ``--pods`` pods over ``--concurrency`` keep-alive
connections:

- ``baseline``: ordinary pods of ``webhook_bench.admission_review`` (opted into two data sets and
  the readiness sidecar), every one of another template (its image tag), so the webhook's caches
  fill with as many distinct entries as in the other run;
- ``1MB values``: the same pods, each also carrying a distinct ``--value-bytes`` value in its app
  container's env and another in a ``probe.autocrane.io/big`` annotation (about 2 MB per review,
  under the webhook's 3 MiB body limit): the issue's hostile case, where the caches once took the
  webhook to 1 GiB and it stayed at 665 MiB afterwards.

RSS comes from ``/proc/PID/status``: the peak is the kernel's high-water mark (``VmHWM``), the
settled figure ``VmRSS`` once it has moved less than 1 MiB over 2 s after the load (at most
``--settle`` seconds). The script prints both runs, the ratios, and whether the hostile run's peak
stays under the chart's 256Mi limit (exit 0 when it does and every pod was admitted).

Bounded: ``--pods`` per server, ``--timeout`` seconds in all, loopback only.

    .venv/bin/python bench/webhook_memory_bench.py              # 1,000 pods per server (~1 min)
    .venv/bin/python bench/webhook_memory_bench.py --pods 200   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import webhook_bench  # the sibling benchmark: pods, TLS files, the HTTP client (and the repository on sys.path)
from controller_kwok_bench import proc_status  # after webhook_bench: it imports devcluster from the repository

CHART_LIMIT_MIB = 256
"""``injector.resources.limits.memory`` in charts/autocrane/values.yaml."""
MIB = 1 << 20


def ordinary_review(index: int, value_bytes: int) -> dict[str, Any]:
    """Pod ``index`` of its own template (image tag), as a ReplicaSet sends it."""
    del value_bytes
    return webhook_bench.admission_review(index, f"1.42.{index}")


def hostile_review(index: int, value_bytes: int) -> dict[str, Any]:
    """:func:`ordinary_review` with a distinct ``value_bytes`` env value and probe annotation."""
    review = ordinary_review(index, 0)
    pod = review["request"]["object"]
    filler = f"{index:08d}" + "x" * (value_bytes - 8)
    pod["spec"]["containers"][0]["env"].append({"name": "BIG", "value": filler})
    pod["metadata"]["annotations"]["probe.autocrane.io/big"] = "http://127.0.0.1:8080/?" + filler
    return review


@dataclass
class Run:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    make: Callable[[int, int], dict[str, Any]]
    started_mib: float = 0.0
    peak_mib: float = 0.0
    settled_mib: float = 0.0
    admitted: int = 0
    errors: int = 0
    request_bytes: int = 0


async def settle(pid: int, limit: float) -> float:
    """VmRSS once it moved less than 1 MiB over 2 s (or after ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    previous = proc_status(pid)["VmRSS"]
    while time.monotonic() < deadline:
        await asyncio.sleep(2)
        current = proc_status(pid)["VmRSS"]
        if abs(current - previous) < 1:
            return current
        previous = current
    return proc_status(pid)["VmRSS"]


async def _client(run: Run, context: ssl.SSLContext, indexes: list[int], value_bytes: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", run.port, ssl=context, server_hostname="localhost")
    try:
        while indexes:
            body = json.dumps(run.make(indexes.pop(), value_bytes)).encode()
            run.request_bytes = max(run.request_bytes, len(body))
            writer.write(webhook_bench.request_bytes(body))
            await writer.drain()
            head, answer = await webhook_bench.read_response(reader)
            if head.startswith(b"HTTP/1.1 200") and b'"allowed":true' in answer:
                run.admitted += 1
            else:
                run.errors += 1
    finally:
        writer.close()


async def admit(run: Run, context: ssl.SSLContext, pods: int, concurrency: int, value_bytes: int) -> None:
    indexes = list(range(pods))
    await asyncio.gather(*(_client(run, context, indexes, value_bytes) for _ in range(concurrency)))


async def bench(arguments: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="autocrane-membench-") as scratch:
        context, cert_file, key_file = webhook_bench.serving_certificate(Path(scratch))
        runs = []
        for name, make in (("baseline", ordinary_review), ("1MB values", hostile_review)):
            port = webhook_bench.free_port()
            process = subprocess.Popen(webhook_bench.webhook_command(webhook_bench.WEBHOOK, port, cert_file, key_file),
                                       cwd=webhook_bench.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs.append(Run(name, process, port, make))
        try:
            for run in runs:
                await webhook_bench.wait_listening(run.port, context, run.process)
                run.started_mib = proc_status(run.process.pid)["VmRSS"]
            await asyncio.wait_for(
                asyncio.gather(*(admit(run, context, arguments.pods, arguments.concurrency, arguments.value_bytes)
                                 for run in runs)), arguments.timeout)
            for run in runs:
                run.peak_mib = proc_status(run.process.pid)["VmHWM"]
            settled = await asyncio.gather(*(settle(run.process.pid, arguments.settle) for run in runs))
            for run, value in zip(runs, settled, strict=True):
                run.settled_mib = value
        finally:
            for run in runs:
                run.process.send_signal(signal.SIGTERM)
            for run in runs:
                try:
                    run.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    run.process.kill()
    baseline, hostile = runs
    print(f"autocrane webhook over TLS, {arguments.pods} pods per server, {arguments.concurrency} keep-alive "
          f"clients each, both servers at once; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'run':<11} {'pods':>5} {'errors':>6} {'largest review':>15} {'start MiB':>10} {'peak MiB':>9} "
          f"{'settled MiB':>12}")
    for run in runs:
        print(f"{run.name:<11} {run.admitted:>5} {run.errors:>6} {run.request_bytes:>15,} {run.started_mib:>10.1f} "
              f"{run.peak_mib:>9.1f} {run.settled_mib:>12.1f}")
    under = hostile.peak_mib < CHART_LIMIT_MIB
    print(f"1MB values / baseline: peak {hostile.peak_mib / baseline.peak_mib:.2f}x, settled "
          f"{hostile.settled_mib / baseline.settled_mib:.2f}x; peak {hostile.peak_mib:.0f} MiB "
          f"{'under' if under else 'OVER'} the chart's {CHART_LIMIT_MIB}Mi limit")
    return 0 if under and not any(run.errors for run in runs) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000, help="pods per server (default %(default)s)")
    parser.add_argument("--value-bytes", type=int, default=1_000_000,
                        help="size of each large value (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="keep-alive clients per server (default %(default)s)")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="at most this many seconds for RSS to settle after the load (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on the load (default %(default)s s)")
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
