"""``python -m devcluster``: build the control-plane binaries and the images, or run a local cluster."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

from devcluster import build, controlplane, images, stack


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
                        description="Start a local cluster, print its kubeconfig, and keep it running "
                        "until interrupted (Ctrl-C or SIGTERM); everything is stopped on exit.")
    up.add_argument("--dir", type=Path, default=build.cache_dir() / "devcluster",
                    help="cluster directory; its kubeconfig is DIR/kubeconfig (default: %(default)s)")
    up.add_argument("--nodes", type=int, default=3, help="fake KWOK nodes (default: %(default)s)")
    up.add_argument("--cluster-only", action="store_true",
                    help="only the control plane: no AutoCrane programs, no sample workload")
    return parser


def _up(directory: Path, nodes: int, with_autocrane: bool) -> int:
    shutil.rmtree(directory, ignore_errors=True)  # a previous run's state is never reused
    directory.mkdir(parents=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("starting the local control plane (the first run builds binaries: tens of minutes)", file=sys.stderr)
    with controlplane.ControlPlane.start(controlplane.Options(nodes=nodes), directory=directory) as plane:
        kubectl = build.bin_dir() / "kubectl"
        print(controlplane.environment_summary(plane))
        autocrane = stack.Stack(plane) if with_autocrane else None
        try:
            if autocrane is not None:
                autocrane.start()
                print(autocrane.summary())
            print(f"\nready. In another shell:\n  export KUBECONFIG={plane.kubeconfig}\n"
                  f"  {kubectl if kubectl.exists() else 'kubectl'} get pods -A\n\nCtrl-C stops the cluster.",
                  flush=True)
            while not stop.wait(1.0):
                plane.check_alive()
        finally:
            if autocrane is not None:
                autocrane.stop()
    print("stopped", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    if ns.action == "build":
        build_args = [a for name in ns.only or [] for a in ("--only", name)] + (["--force"] if ns.force else [])
        return build.main(build_args)
    if ns.action == "images":
        return images.main(["--force"] if ns.force else [])
    try:
        return _up(ns.dir, ns.nodes, with_autocrane=not ns.cluster_only)
    except controlplane.ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
