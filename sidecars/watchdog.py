"""``autocrane watchdog get|post``: read or write a pod's watchdog statuses.

``post NAME LEVEL MESSAGE`` sets ``status.autocrane.io/NAME: <level>/<now>/<message>`` and the
``status.autocrane.io/health`` label (the worst level, recomputed with the new status) with one
JSON merge patch that touches only those two keys. The patch carries the pod's
``resourceVersion``, so a concurrent writer makes it fail with 409 instead of leaving a stale
label; it is then rebuilt from a fresh read and retried. Levels are validated: an unknown one
is refused before anything is sent.

``get`` prints ``name level time message`` per watchdog, from the API or, with
``--annotations-file``, from the downward-API file (no API access needed).

The pod defaults to ``$POD_NAME`` in ``$POD_NAMESPACE`` (downward-API env vars). The API is
reached in-cluster, else through ``--kubeconfig`` / ``$KUBECONFIG``; posting needs ``get`` and
``patch`` on that pod.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autocrane import errors, kube, output, podinfo, watchdogs

CONFLICT_RETRIES = 5


def build_patch(pod: Mapping[str, Any], name: str, status: watchdogs.Status) -> dict[str, Any]:
    """The merge patch for setting watchdog ``name`` to ``status`` on ``pod`` (raw JSON) (pure)."""
    metadata = pod.get("metadata") or {}
    key = watchdogs.status_key(name)
    value = watchdogs.format_status(status)
    merged = {**(metadata.get("annotations") or {}), key: value}
    label, _ = watchdogs.health(merged)
    patch: dict[str, Any] = {"metadata": {"annotations": {key: value}, "labels": {watchdogs.HEALTH_LABEL: label}}}
    if metadata.get("resourceVersion"):
        patch["metadata"]["resourceVersion"] = metadata["resourceVersion"]
    return patch


def describe(pod_annotations: Mapping[str, str]) -> list[str]:
    found, problems = watchdogs.statuses(pod_annotations)
    lines = [f"{name} {s.level} {watchdogs.format_time(s.time)} {s.message}" for name, s in sorted(found.items())]
    return lines + [f"{name} unreadable {problem}" for name, problem in sorted(problems.items())]


def _shown(pod_annotations: Mapping[str, str], form: str) -> list[str]:
    return describe(pod_annotations) if form == "table" else [output.render(watchdogs.records(pod_annotations), form)]


async def pod_api(namespace: str, pod: str, make_patch: Callable[[dict[str, Any]], dict[str, Any]] | None,
                  kubeconfig: str | None) -> dict[str, Any]:
    """GET the pod and, given ``make_patch``, merge-patch it with ``make_patch(pod)``, retrying on 409.

    Returns the pod as read (raw JSON). This is the only code here that talks to the API, through
    ``autocrane.kube`` (in-cluster credentials, else the kubeconfig).
    """
    api = await kube.Kube.connect(Path(kubeconfig) if kubeconfig else None)
    try:
        for attempt in range(CONFLICT_RETRIES):
            current = await api.get_pod(namespace, pod)
            if make_patch is None:
                return current
            try:
                await api.merge_patch_pod(namespace, pod, make_patch(current))
                return current
            except errors.Conflict:
                if attempt + 1 == CONFLICT_RETRIES:
                    raise
    finally:
        await api.close()
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="autocrane watchdog", description="Read or write this pod's watchdog statuses.")
    p.add_argument("--pod", default=os.environ.get("POD_NAME"), help="pod name (default $POD_NAME)")
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"),
                   help="pod namespace (default $POD_NAMESPACE, else default)")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig outside a cluster")
    sub = p.add_subparsers(dest="action", required=True)
    get = sub.add_parser("get", help="print name, level, time and message of each watchdog")
    get.add_argument("--annotations-file", type=Path, help="read the downward-API file instead of the API")
    output.add_argument(get)
    post = sub.add_parser("post", help="set one watchdog status and the health label")
    post.add_argument("name", help="watchdog name: status.autocrane.io/NAME")
    post.add_argument("level", help="info, warning or error")
    post.add_argument("message", help="free text for humans")
    args = p.parse_args(argv)
    try:
        if args.action == "get" and args.annotations_file:
            notes = podinfo.read(args.annotations_file)
            lines = _shown(notes, args.output)
        else:
            if not args.pod:
                raise ValueError("no pod: pass --pod or set POD_NAME")
            if args.action == "get":
                pod = asyncio.run(pod_api(args.namespace, args.pod, None, args.kubeconfig))
                notes = pod.get("metadata", {}).get("annotations") or {}
                lines = _shown(notes, args.output)
            else:
                status = watchdogs.Status(watchdogs.Level.parse(args.level, "level"), dt.datetime.now(dt.UTC),
                                          args.message)
                watchdogs.check_name(args.name)
                asyncio.run(pod_api(args.namespace, args.pod, lambda pod: build_patch(pod, args.name, status),
                                    args.kubeconfig))
                lines = [f"{args.name} {status.level} {watchdogs.format_time(status.time)} {status.message}"]
    except Exception as error:  # a CLI: say what failed in one line, exit 1
        print(f"autocrane watchdog: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
