"""Time to sync a ~1 GiB data set over loopback, beside ``curl | tar -xz`` of the same archive.

    .venv/bin/python bench/datasync_bench.py [--gib 1.0] [--runs 3] [--work DIR]

A real ``autocrane datarepository`` process packs a directory source and serves it on
127.0.0.1. Then, alternating, for ``--runs`` rounds:

- **ceiling**: ``curl -s URL | tar -xzf - -C fresh-dir`` (download and extraction pipelined,
  nothing verified);
- **datadeployer**: one ``syncing.sync`` in this process: manifest lookup, resumable download
  with sha256 verification, checked extraction into a fresh tree, publication by symlink swap.

Also the **swap latency**: the time to publish an already-extracted tree (symlink + rename +
directory fsync + pruning), median and p99 of 200 swaps. The data set is half incompressible
(like model weights) and half text-like, in 4 MiB files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from autocrane import manifests
from sidecars.datadeploy import fetching, swap, syncing

FILE = 4 << 20


def make_tree(root: Path, total: int) -> None:
    root.mkdir(parents=True)
    words = b" ".join(b"word%d" % i for i in range(20000)) + b"\n"
    for i in range(total // FILE):
        sub = root / f"shard{i % 16:02d}"
        sub.mkdir(exist_ok=True)
        data = os.urandom(FILE) if i % 2 else (words * (FILE // len(words) + 1))[:FILE]
        (sub / f"part{i:05d}.bin").write_bytes(data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("repository never became ready")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="datasync-bench-", dir=args.work))
    repo_proc = None
    try:
        started = time.monotonic()
        make_tree(work / "source", int(args.gib * (1 << 30)))
        print(f"data set: {args.gib:g} GiB in {FILE >> 20} MiB files, made in {time.monotonic() - started:.1f}s")
        (work / "sources.yaml").write_text(f"sources:\n  - name: bench\n    every: 3600\n"
                                           f"    directory: {{path: {work / 'source'}}}\n")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        repo_proc = subprocess.Popen([sys.executable, "-c", "from autocrane import cli; cli.main()", "datarepository",
                                      "--config", str(work / "sources.yaml"), "--data-dir", str(work / "state"),
                                      "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"])
        wait_ready(base)
        repo = fetching.Repository(base)
        version = repo.source("bench").versions[-1]
        print(f"archive: {version.size / 2**20:.0f} MiB (gzip), packed by the repository in "
              f"{time.monotonic() - started:.1f}s")
        url = base + repo.archive_path(version.sha256)
        request = manifests.DataRequest(version.version, version.sha256)
        ceiling, ours = [], []
        for run in range(args.runs):
            target = work / f"curl-{run}"
            target.mkdir()
            started = time.monotonic()
            subprocess.run(f"curl -sf {url} | tar -xzf - -C {target}", shell=True, check=True)
            ceiling.append(time.monotonic() - started)
            shutil.rmtree(target)

            root = work / f"root-{run}"
            root.mkdir()
            settings = syncing.Settings(root, repo)
            started = time.monotonic()
            syncing.sync(settings, swap.Store(root), "bench", "bench", request)
            ours.append(time.monotonic() - started)
            if run < args.runs - 1:
                shutil.rmtree(root)
            print(f"run {run + 1}: curl|tar {ceiling[-1]:.2f}s, datadeployer {ours[-1]:.2f}s")
        store = swap.Store(work / f"root-{args.runs - 1}")
        current = store.current("bench")
        assert current is not None
        other = store.new_tree("bench", "other")
        shutil.copytree(current.path, other, symlinks=True)
        store.complete("bench", other, "other", "0" * 64)
        trees, latencies = [current.path, other], []
        for i in range(200):
            started = time.perf_counter()
            store.publish("bench", trees[i % 2])
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        c, o = statistics.median(ceiling), statistics.median(ours)
        gib = (int(args.gib * (1 << 30)) // FILE * FILE) / 2**30
        print(f"\nmedian of {args.runs}: curl|tar {c:.2f}s ({gib / c:.2f} GiB/s), "
              f"datadeployer {o:.2f}s ({gib / o:.2f} GiB/s): {c / o:.2f}x the ceiling")
        print(f"swap latency over 200 swaps: median {statistics.median(latencies) * 1e3:.2f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1e3:.2f} ms")
    finally:
        if repo_proc is not None:
            repo_proc.send_signal(signal.SIGTERM)
            repo_proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
