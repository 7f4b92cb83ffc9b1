"""``autocrane status``: a read-only table of pods, their watchdogs, health and data versions.

One LIST of pods (raw JSON, through :mod:`controller.kubeapi`), formatted by the pure
:func:`table`. Columns: namespace, pod, health label, each watchdog as ``name=level(age)``, and
each data set as ``name=<requested version>`` (``-`` when the controller has not requested one).
Rollout stages are not shown yet: data rollouts are not implemented (docs/controller.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autocrane import annotations, manifests, watchdogs
from controller import kubeapi


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _watchdogs(notes: Mapping[str, str], now: dt.datetime) -> str:
    found, problems = watchdogs.statuses(notes)
    cells = [f"{name}={status.level}({_age((now - status.time).total_seconds())})"
             for name, status in sorted(found.items())]
    cells += [f"{name}=unreadable" for name in sorted(problems)]
    return ",".join(cells) or "-"


def _data(notes: Mapping[str, str]) -> str:
    cells = []
    for key in sorted(notes):
        if not key.startswith(annotations.DATA_PREFIX):
            continue
        name = key[len(annotations.DATA_PREFIX):]
        request = notes.get(annotations.REQUEST_DATA_PREFIX + name)
        version = "-"
        if request is not None:
            try:
                version = manifests.parse_request(request).version
            except manifests.ManifestError:
                version = "invalid"
        cells.append(f"{name}={version}")
    return ",".join(cells) or "-"


def table(pods: Iterable[Mapping[str, Any]], now: dt.datetime) -> str:
    """The table for raw pod JSON objects (pure)."""
    rows = [("NAMESPACE", "POD", "HEALTH", "WATCHDOGS", "DATA")]
    for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"].get("name", ""))):
        meta = pod["metadata"]
        notes = meta.get("annotations") or {}
        health = (meta.get("labels") or {}).get(watchdogs.HEALTH_LABEL, "-")
        rows.append((meta.get("namespace", ""), meta.get("name", ""), health, _watchdogs(notes, now), _data(notes)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                     for row in rows)


async def _list(kubeconfig: Path | None, namespace: str | None, selector: str | None) -> list[dict[str, Any]]:
    api = await kubeapi.KubeApi.connect(kubeconfig)
    try:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        items: list[dict[str, Any]] = (await api.request("GET", path, query={"labelSelector": selector})).get(
            "items") or []
        return items
    finally:
        await api.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="autocrane status", description=(
        "Print pods with their watchdog statuses, health label and requested data versions."))
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--all-namespaces", "-A", action="store_true")
    parser.add_argument("--selector", "-l", default=None)
    args = parser.parse_args(argv)
    try:
        items = asyncio.run(_list(args.kubeconfig, None if args.all_namespaces else args.namespace, args.selector))
    except kubeapi.ApiError as exc:
        print(f"autocrane status: {exc}")
        return 1
    print(table(items, dt.datetime.now(dt.UTC)))
    return 0
