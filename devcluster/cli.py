"""``python -m devcluster``: build the control-plane binaries and the images, or run a local cluster."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from devcluster import build, controlplane, helmstack, images, linuxhost, nodeclaim, stack


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster",
        description="A real local Kubernetes control plane without Docker: etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler and KWOK as plain processes on 127.0.0.1.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build the binaries into the cache (cached ones are kept)",
                       description=f"Build the binaries from Go modules into {build.bin_dir()}.")
    b.add_argument("--only", action="append", choices=[r.name for r in build.recipes()], help="build only these")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    i = sub.add_parser("images", help="build AutoCrane's images with buildah (cached by content)",
                       description=f"Build the images from Dockerfile.webhook and Dockerfile.sidecar with buildah "
                       f"on a base made from Debian packages, into {images.images_dir()}; print refs and sizes.")
    i.add_argument("--force", action="store_true", help="rebuild the base and every image even when cached")
    up = sub.add_parser("up", help="run a local cluster in the foreground until Ctrl-C",
                        description="Start a local cluster, install AutoCrane with helm from the images built "
                        "here onto its real node, deploy a sample app that reads a data set from the chart's "
                        "repository, print what to try, and keep it all running until interrupted (Ctrl-C or "
                        "SIGTERM); everything is stopped on exit. Without a real node (not Linux, not root) "
                        "AutoCrane runs as local processes beside KWOK instead, and the sample gets no data.")
    up.add_argument("--dir", type=Path, default=build.cache_dir() / "devcluster",
                    help="cluster directory; its kubeconfig is DIR/kubeconfig (default: %(default)s)")
    up.add_argument("--nodes", type=int, default=3, help="fake KWOK nodes (default: %(default)s)")
    up.add_argument("--cluster-only", action="store_true",
                    help="only the control plane: no AutoCrane, no sample workload")
    up.add_argument("--no-real-node", action="store_true",
                    help="no real kubelet node (by default one starts where the host can run it: Linux, root)")
    sub.add_parser("sweep", help="release what killed runs' real nodes left on this host",
                   description="Remove what real nodes of clusters that were killed (not stopped) left on "
                   "this host: processes, mounts, network namespace and veth, cgroups, files. Every start "
                   "does this too; running clusters are left alone.")
    return parser


def _up(directory: Path, nodes: int, with_autocrane: bool, real_node: bool) -> int:
    if os.geteuid() == 0 and nodeclaim.REGISTRY.exists():
        nodeclaim.Registry().sweep()  # a killed run's node may still have mounts in `directory`
    linuxhost.rmtree_without_mounts(directory)  # a previous run's state is never reused
    directory.mkdir(parents=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("starting the local control plane (the first run builds binaries: tens of minutes)", file=sys.stderr)
    options = controlplane.Options(nodes=nodes, real_node="auto" if real_node else "off")
    started = time.monotonic()
    with controlplane.ControlPlane.start(options, directory=directory) as plane:
        kubectl = build.bin_dir() / "kubectl"
        print(controlplane.environment_summary(plane), flush=True)
        autocrane: helmstack.HelmStack | stack.Stack | None = None
        if with_autocrane and plane.node is not None:
            autocrane = helmstack.HelmStack(plane)
        elif with_autocrane:
            print("devcluster: no real node here, so the chart cannot run: falling back to AutoCrane as local "
                  "processes beside KWOK, with a stand-in running the sample app on each pod's IP (no data "
                  "sets: KWOK runs no datadeployer)", file=sys.stderr, flush=True)
            autocrane = stack.Stack(plane)
        try:
            if autocrane is not None:
                autocrane.start()
                print(autocrane.summary())
            print(f"\nready in {time.monotonic() - started:.0f}s. In another shell:\n"
                  f"  export KUBECONFIG={plane.kubeconfig}\n"
                  f"  {kubectl if kubectl.exists() else 'kubectl'} get pods -A\n\nCtrl-C stops everything.",
                  flush=True)
            while not stop.wait(1.0):
                plane.check_alive()
        finally:
            if autocrane is not None:
                autocrane.stop()
    print("stopped", file=sys.stderr)
    return 0


def _sweep() -> int:
    if os.geteuid() != 0:
        print("error: only root can have run a real node, and only root can release one", file=sys.stderr)
        return 1
    try:
        released = nodeclaim.Registry().sweep()
    except linuxhost.HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"released {len(released)} real node(s) left by killed runs" if released else "nothing to release")
    return 0


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    if ns.action == "build":
        build_args = [a for name in ns.only or [] for a in ("--only", name)] + (["--force"] if ns.force else [])
        return build.main(build_args)
    if ns.action == "images":
        return images.main(["--force"] if ns.force else [])
    if ns.action == "sweep":
        return _sweep()
    try:
        return _up(ns.dir, ns.nodes, with_autocrane=not ns.cluster_only, real_node=not ns.no_real_node)
    except (controlplane.ControlPlaneError, linuxhost.HostError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
