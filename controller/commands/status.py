"""``autocrane status``: a read-only table of pods, their watchdogs, health and data versions.

One LIST of pods and one of ``DataRollout`` objects (raw JSON, through :mod:`autocrane.kube`),
formatted by the pure :func:`table`. Columns: namespace, pod, health label, each watchdog as
``name=level(age)``, and each data set as ``name=<requested>/<acknowledged>`` (``-`` when the
controller has not requested one; the acknowledged version is the datadeployer's, mirrored by
the controller in ``status.data.autocrane.io/<name>``, and absent until it reported one),
followed by its source's rollout: ``(<source>: <phase> <stage>/<stages> -> <target>)``.

Then, when the namespace has staged Deployments (docs/app-rollouts.md), one row per Deployment of
each group (:func:`groups_table`): its stage, images, what it is doing (Held, RollingOut n/m,
Baking (time left), RolledBack (reason), Rejected, Stuck, Done; ``decision.phase_of``), the pods
of its new revision in error, and under each group the command to run next.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autocrane import approllouts, errors, inpod, keys, kube, manifests, output, watchdogs
from controller import pods as pod_records
from controller.approllouts import decision, objects
from controller.approllouts import loop as app_loop
from controller.datarollouts import loop as datarollouts


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


def _rollout(found: Mapping[str, Any] | None) -> str:
    if not found:
        return ""
    status = found.get("status") or {}
    source = (found.get("spec") or {}).get("source", "")
    text = f"{source}: {status.get('phase') or 'new'}"
    if status.get("target"):
        text += f" {status.get('stageText') or ''} -> {status['target']}"
    return f" ({text})"


def _data(notes: Mapping[str, str], rollouts: Mapping[str, Mapping[str, Any]]) -> str:
    cells = []
    for key in sorted(notes):
        if not key.startswith(keys.DATA_PREFIX):
            continue
        name = key[len(keys.DATA_PREFIX):]
        request = notes.get(keys.REQUEST_DATA_PREFIX + name)
        version = "-"
        if request is not None:
            try:
                version = manifests.parse_request(request).version
            except manifests.ManifestError:
                version = "invalid"
        acked = notes.get(keys.STATUS_DATA_PREFIX + name)
        if acked is not None:
            try:
                version += "/" + inpod.mirrored_version(acked, keys.STATUS_DATA_PREFIX + name)
            except ValueError:  # UntrustedValueError and ManifestError are ValueErrors
                version += "/invalid"
        cells.append(f"{name}={version}{_rollout(rollouts.get(notes[key].strip()))}")
    return ",".join(cells) or "-"


def _data_records(notes: Mapping[str, str], rollouts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in sorted(notes):
        if not key.startswith(keys.DATA_PREFIX):
            continue
        name, source = key[len(keys.DATA_PREFIX):], notes[key].strip()
        entry: dict[str, Any] = {"source": source, "requested": None, "acknowledged": None}
        if (request := notes.get(keys.REQUEST_DATA_PREFIX + name)) is not None:
            try:
                entry["requested"] = manifests.parse_request(request).version
            except manifests.ManifestError:
                entry["requested"] = "invalid"
        if (acked := notes.get(keys.STATUS_DATA_PREFIX + name)) is not None:
            try:
                entry["acknowledged"] = inpod.mirrored_version(acked, keys.STATUS_DATA_PREFIX + name)
            except ValueError:
                entry["acknowledged"] = "invalid"
        if (rollout := rollouts.get(source)) is not None:
            status = rollout.get("status") or {}
            entry["rollout"] = {"name": (rollout.get("metadata") or {}).get("name"), "phase": status.get("phase"),
                                "stage": status.get("stageText"), "target": status.get("target"),
                                "lastKnownGood": status.get("lastKnownGood")}
        found[name] = entry
    return found


def records(pods: Iterable[Mapping[str, Any]], rollouts: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """What the table shows, as records for ``-o json|yaml`` (pure): per pod its health, watchdogs and data."""
    by_source = _by_source(rollouts)
    found = []
    for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"].get("name", ""))):
        meta = pod["metadata"]
        notes = meta.get("annotations") or {}
        found.append({"namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                      "health": (meta.get("labels") or {}).get(watchdogs.HEALTH_LABEL),
                      "watchdogs": watchdogs.records(notes),
                      "data": _data_records(notes, by_source.get(meta.get("namespace", ""), {}))})
    return found


def _by_source(rollouts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """DataRollouts by namespace, then source."""
    by_source: dict[str, dict[str, Mapping[str, Any]]] = {}
    for found in rollouts:
        namespace = (found.get("metadata") or {}).get("namespace", "")
        by_source.setdefault(namespace, {})[(found.get("spec") or {}).get("source", "")] = found
    return by_source


def table(pods: Iterable[Mapping[str, Any]], now: dt.datetime,
          rollouts: Iterable[Mapping[str, Any]] = ()) -> str:
    """The table for raw pod JSON objects and DataRollout objects (pure)."""
    by_source = _by_source(rollouts)
    rows = [("NAMESPACE", "POD", "HEALTH", "WATCHDOGS", "DATA")]
    for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"].get("name", ""))):
        meta = pod["metadata"]
        notes = meta.get("annotations") or {}
        health = (meta.get("labels") or {}).get(watchdogs.HEALTH_LABEL, "-")
        rows.append((meta.get("namespace", ""), meta.get("name", ""), health, _watchdogs(notes, now),
                     _data(notes, by_source.get(meta.get("namespace", ""), {}))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                     for row in rows)


def next_command(group: str, namespace: str, phase: str) -> str:
    """What to run next for a group in ``phase`` (pure)."""
    command = f"autocrane rollout {{}} {group} -n {namespace}"
    return {
        approllouts.BAKING: f"wait for the bake, or `{command.format('promote')}` to skip it, "
                            f"`{command.format('abort')}` to roll back",
        approllouts.PROGRESSING: f"wait for the rollout, or `{command.format('abort')}` to roll back",
        approllouts.ROLLED_BACK: f"change the templates to start a new release, or `{command.format('retry')}`",
        approllouts.STUCK: "old pods fail too: fix the environment and the stage goes on, or "
                           f"`{command.format('abort')}`",
        approllouts.PAUSED: f"`{command.format('resume')}` to release the next stage",
    }.get(phase, "nothing to do")


def groups_table(deployments: Iterable[Mapping[str, Any]], replica_sets: Iterable[Mapping[str, Any]],
                 pods: Iterable[Mapping[str, Any]], rollouts: Iterable[Mapping[str, Any]], now: float) -> str:
    """The app rollout groups' stages (raw Deployments, ReplicaSets, pods and AppRollouts; pure)."""
    found = [d for raw in deployments if (d := objects.deployment_from_json(raw)) is not None]
    if not found:
        return ""
    sets = [rs for raw in replica_sets if (rs := objects.replica_set_from_json(raw)) is not None]
    records = [pod_records.from_json(raw) for raw in pods]  # type: ignore[arg-type]  # raw pods as listed
    by_group = {((r.get("metadata") or {}).get("namespace"), (r.get("metadata") or {}).get("name")): r
                for r in rollouts}
    out: list[str] = []
    for namespace, group in sorted({(d.namespace, d.group) for d in found}):
        rollout = by_group.get((namespace, group)) or {}
        spec = approllouts.spec_from_json(rollout.get("spec"))
        status = approllouts.status_from_json(rollout.get("status"))
        rows = [("STAGE", "DEPLOYMENT", "IMAGES", "STATE", "NEW PODS IN ERROR")]
        for d in sorted((d for d in found if (d.namespace, d.group) == (namespace, group)),
                        key=lambda d: (d.stage, d.name)):
            new = {rs.name for rs in sets if rs.owner_uid == d.uid and rs.template_hash == d.template_hash}
            failing = sorted(p.name for p in records if p.owner is not None and p.owner.name in new
                             and p.health_label == "error")
            rows.append((str(d.stage), d.name, ",".join(d.images), decision.phase_of(status, d, spec, now),
                         ",".join(failing) or "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        table = "\n".join("  " + "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)),
                                              row[-1]]).rstrip() for row in rows)
        head = f"group {namespace}/{group}: {status.phase}" + (f" ({status.message})" if status.message else "")
        out.append(f"{head}\n{table}\n  next: {next_command(group, namespace, status.phase)}")
    return "\n\n".join(out)


async def _groups(api: kube.Api, namespace: str | None) -> tuple[list[dict[str, Any]], ...]:
    """The group Deployments, ReplicaSets and AppRollouts of ``namespace`` (none when not readable)."""
    scope = f"/apis/apps/v1/namespaces/{namespace}" if namespace else "/apis/apps/v1"
    try:
        found = (await api.request("GET", f"{scope}/deployments",
                                   query={"labelSelector": approllouts.GROUP_LABEL})).get("items") or []
        if not found:
            return [], [], []
        sets = (await api.request("GET", f"{scope}/replicasets")).get("items") or []
        return found, sets, await app_loop.list_groups(api, namespace)
    except errors.KubeError:
        return [], [], []  # no CRD, or no permission: show pods only


async def _list(kubeconfig: Path | None, namespace: str | None,
                selector: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                               tuple[list[dict[str, Any]], ...]]:
    api = await kube.Kube.connect(kubeconfig)
    try:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        items: list[dict[str, Any]] = (await api.request("GET", path, query={"labelSelector": selector})).get(
            "items") or []
        try:
            rollouts = await datarollouts.list_rollouts(api, namespace)
        except errors.KubeError:
            rollouts = []  # no CRD installed, or no permission to read DataRollouts: show pods only
        return items, rollouts, await _groups(api, namespace)
    finally:
        await api.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="autocrane status", description=(
        "Print pods with their watchdog statuses, health label, requested/acknowledged data versions and "
        "their rollouts; then each group of staged Deployments, stage by stage, and the command to run next."))
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--all-namespaces", "-A", action="store_true")
    parser.add_argument("--selector", "-l", default=None)
    output.add_argument(parser)
    args = parser.parse_args(argv)
    try:
        items, rollouts, (deployments, replica_sets, groups) = asyncio.run(_list(
            args.kubeconfig, None if args.all_namespaces else args.namespace, args.selector))
    except (errors.KubeError, errors.ConfigError) as exc:
        print(f"autocrane status: {exc}")
        return 1
    now = dt.datetime.now(dt.UTC)
    if args.output != "table":
        print(output.render(records(items, rollouts), args.output))
        return 0
    print(table(items, now, rollouts))
    staged = groups_table(deployments, replica_sets, items, groups, now.timestamp())
    if staged:
        print(f"\n{staged}")
    return 0
