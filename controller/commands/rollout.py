"""``autocrane rollout promote|abort|pin|list|status``: manual control of data rollouts.

Each command is one merge patch of the source's ``DataRollout`` spec (the controller acts on it
at its next pass and records what it did in the status):

- ``promote SOURCE``: pass the current stage's gate now (or retry a held version); sets
  ``spec.promote`` to a new token, so promoting twice promotes twice;
- ``abort SOURCE``: roll the running rollout back to the last known good and hold its version
  (``spec.abort``, a token too);
- ``pin SOURCE VERSION`` / ``pin SOURCE --clear``: put every pod on VERSION and roll nothing out
  until cleared (``spec.pinVersion``);
- ``list``: the namespace's rollouts (what ``kubectl get datarollouts`` shows; ``-o json|yaml``);
- ``status SOURCE [--version V] [--wait]``: for CI pipelines: exit 0 once V (else the running
  version) is the last known good, 1 once it was rolled back, 3 while it is not finished
  (:func:`verdict`); ``--wait`` polls until 0 or 1, up to ``--timeout``. ``status GROUP`` does the
  same for an app rollout (:func:`app_verdict`: 0 once every Deployment runs its last known good).

For a group of staged Deployments (its ``AppRollout``, docs/app-rollouts.md) the same commands
and three more, each one merge patch of the AppRollout's spec:

- ``promote GROUP``: pass the current stage's gate now (skip the rest of the bake);
- ``abort GROUP``: roll the current stage back now;
- ``retry GROUP``: forget the rejection of the templates the Deployments have now, so they roll out;
- ``pause GROUP`` / ``resume GROUP``: release no further stage (rollbacks still happen) / go on.

``promote`` and ``abort`` act on the AppRollout named NAME when there is one and no DataRollout
of that source (``--app`` or ``--data`` chooses when both exist). ``list`` shows both kinds.
Needs ``get``, ``list`` and ``patch`` on ``datarollouts.autocrane.io`` / ``approllouts.autocrane.io``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autocrane import approllouts, errors, kube, output, untrusted
from controller.approllouts import loop as app_loop
from controller.approllouts import objects
from controller.datarollouts import loop as datarollouts
from controller.datarollouts import resource

APP_ONLY = ("retry", "pause", "resume")
RESULTS = {
    # what each command asks the controller to do, said back to the user
    "promote": "promoted (the controller passes the current stage's gate at its next pass)",
    "abort": "aborted (the controller rolls the current stage back at its next pass)",
    "retry": "retried (the controller forgets the rejection of the current templates at its next pass)",
    "pause": "paused (no further stage is released; rollbacks still happen)",
    "resume": "resumed (the next stage is released when the current one passes)",
}


def token(now: dt.datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def spec_patch(action: str, now: dt.datetime, version: str | None = None) -> dict[str, Any]:
    """The merge patch for one command (pure but for the token's randomness)."""
    if action in ("promote", "abort", "retry"):
        return {"spec": {action: token(now)}}
    if action in ("pause", "resume"):
        return {"spec": {"paused": action == "pause"}}
    if action == "pin":
        return {"spec": {"pinVersion": version}}
    raise ValueError(f"unknown action {action!r}")


def find(rollouts: Iterable[Mapping[str, Any]], source: str) -> Mapping[str, Any] | None:
    """The DataRollout of ``source`` (by ``spec.source``, else by the name the controller gives it)."""
    listed = list(rollouts)
    return next((r for r in listed if (r.get("spec") or {}).get("source") == source), None) or next(
        (r for r in listed if (r.get("metadata") or {}).get("name") == resource.object_name(source)), None)


def records(rollouts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rollouts as records for ``-o json|yaml`` (pure)."""
    found = []
    for one in sorted(rollouts, key=lambda r: (r.get("metadata") or {}).get("name", "")):
        status, meta = one.get("status") or {}, one.get("metadata") or {}
        found.append({"namespace": meta.get("namespace"), "name": meta.get("name"),
                      "source": (one.get("spec") or {}).get("source"), "phase": status.get("phase"),
                      "stage": status.get("stageText"), "target": status.get("target"),
                      "lastKnownGood": status.get("lastKnownGood"), "held": list(status.get("held") or []),
                      "message": status.get("message")})
    return found


DONE, FAILED, PENDING = 0, 1, 3
"""``rollout status`` exit codes: finished (the version is the last known good), rolled back (held), not yet."""


def verdict(found: Mapping[str, Any], version: str | None) -> tuple[int, str]:
    """(exit code, message) for ``rollout status`` of a DataRollout (pure).

    With ``version``: DONE once it is the last known good, FAILED once it is held (rolled back),
    PENDING before. Without: the rollout's own phase, PENDING while Progressing.
    """
    status = found.get("status") or {}
    phase, lkg, held = status.get("phase") or "new", status.get("lastKnownGood"), status.get("held") or []
    where = f"datarollout {(found.get('metadata') or {}).get('name', '')}"
    if version is not None:
        if lkg == version:
            return DONE, f"{where}: {version} rolled out (the last known good)"
        if version in held:
            return FAILED, f"{where}: {version} was rolled back: {status.get('message') or 'see its Events'}"
        doing = f", {status.get('stageText')} -> {status.get('target')}" if status.get("target") else ""
        return PENDING, f"{where}: waiting for {version} ({phase}{doing})"
    if phase == "Progressing":
        return PENDING, f"{where}: Progressing {status.get('stageText') or ''} -> {status.get('target')}"
    if phase == "RolledBack":
        return FAILED, f"{where}: RolledBack: {status.get('message') or 'see its Events'}"
    return DONE, f"{where}: {phase}" + (f", last known good {lkg}" if lkg else "")


def app_verdict(group: Mapping[str, Any], deployments: Iterable[Mapping[str, Any]]) -> tuple[int, str]:
    """(exit code, message) for ``rollout status`` of an app rollout group (pure).

    DONE once the group is Healthy and every Deployment runs its last known good template, fully
    rolled out; FAILED once the group is RolledBack or a Deployment has a template that was rejected;
    PENDING before (Progressing, Baking, Paused, Stuck, or a new template the controller has not seen).
    """
    status = approllouts.status_from_json(untrusted.mapping(group.get("status")))
    where = f"approllout {(group.get('metadata') or {}).get('name', '')}"
    members = [d for raw in deployments if (d := objects.deployment_from_json(raw)) is not None]
    records = {d.name: status.deployments.get(d.name, approllouts.Record()) for d in members}
    rejected = [d.name for d in members if d.template_hash in records[d.name].rejected]
    if status.phase == approllouts.ROLLED_BACK or rejected:
        why = status.message or (f"the templates of {', '.join(sorted(rejected))} were rejected" if rejected else "")
        return FAILED, f"{where}: rolled back: {why or 'see its Events'}"
    stage = "" if status.stage is None else f" stage {status.stage}"
    if status.phase != approllouts.HEALTHY:
        return PENDING, f"{where}: {status.phase}{stage}" + (f": {status.message}" if status.message else "")
    waiting = sorted(d.name for d in members
                     if d.template_hash != records[d.name].last_known_good or not d.rolled_out)
    if waiting:
        return PENDING, f"{where}: waiting for {', '.join(waiting)} to roll out"
    return DONE, f"{where}: rolled out ({len(members)} Deployments on their last known good)"


def app_listing(groups: Iterable[Mapping[str, Any]]) -> str:
    """The AppRollouts, one line each (what ``kubectl get approllouts -o wide`` shows)."""
    rows = [("GROUP", "PHASE", "STAGE", "REASON", "MESSAGE")]
    for found in sorted(groups, key=lambda r: (r.get("metadata") or {}).get("name", "")):
        status = found.get("status") or {}
        stage = status.get("stage")
        rows.append(((found.get("metadata") or {}).get("name", ""), status.get("phase") or "-",
                     "-" if stage is None else str(stage), status.get("reason") or "-", status.get("message") or ""))
    return _columns(rows)


def choose(action: str, name: str, data: Mapping[str, Any] | None, app: Mapping[str, Any] | None,
           kind: str | None) -> tuple[str, Mapping[str, Any]] | str:
    """("app" | "data", the object) the command acts on, or why there is none (pure)."""
    if kind == "data" and action in APP_ONLY:
        return f"{action} is for app rollouts (AppRollout) only"
    if kind == "app" or action in APP_ONLY or (kind is None and app is not None and data is None):
        return ("app", app) if app is not None else (
            f"no AppRollout {name!r} (the controller creates one per group of Deployments labelled "
            f"{approllouts.GROUP_LABEL}={name})")
    if kind is None and app is not None and data is not None:
        return f"both an AppRollout and a DataRollout answer to {name!r}: add --app or --data"
    return ("data", data) if data is not None else (
        f"no DataRollout for source {name!r} (the controller creates it when a pod uses the source)")


def _columns(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                     for row in rows)


def listing(rollouts: Iterable[Mapping[str, Any]]) -> str:
    rows = [("NAME", "SOURCE", "PHASE", "STAGE", "TARGET", "LAST-KNOWN-GOOD", "MESSAGE")]
    for found in sorted(rollouts, key=lambda r: (r.get("metadata") or {}).get("name", "")):
        status = found.get("status") or {}
        rows.append(((found.get("metadata") or {}).get("name", ""), (found.get("spec") or {}).get("source", ""),
                     status.get("phase") or "-", status.get("stageText") or "-", status.get("target") or "-",
                     status.get("lastKnownGood") or "-", status.get("message") or ""))
    return _columns(rows)


async def _groups(api: kube.Api, namespace: str) -> list[dict[str, Any]]:
    try:
        return await app_loop.list_groups(api, namespace)
    except errors.NotFound:  # no AppRollout CRD installed
        return []


async def _data(api: kube.Api, namespace: str) -> list[dict[str, Any]]:
    try:
        return await datarollouts.list_rollouts(api, namespace)
    except errors.NotFound:  # no DataRollout CRD installed
        return []


async def _run(args: argparse.Namespace) -> int:
    api = await kube.Kube.connect(args.kubeconfig)
    try:
        groups = await _groups(api, args.namespace)
        if args.action == "list":
            rollouts = await _data(api, args.namespace)
            if args.output != "table":
                print(output.render(records(rollouts), args.output))
            else:
                print(listing(rollouts) + ("\n\n" + app_listing(groups) if groups else ""))
            return 0
        if args.action == "status":
            app = next((g for g in groups if (g.get("metadata") or {}).get("name") == args.source), None)
            data = None if args.kind == "app" else find(await _data(api, args.namespace), args.source)
            if args.kind == "app" or (args.kind is None and data is None and app is not None):
                if args.version is not None:
                    print("autocrane rollout status: --version is for data rollouts; an app rollout waits for "
                          "the templates its Deployments have now")
                    return 1
                return await _app_status(api, args)
            return await _status(api, args, data)
        name = args.name
        app = next((g for g in groups if (g.get("metadata") or {}).get("name") == name), None)
        data = None if args.action in APP_ONLY or args.kind == "app" else find(await _data(api, args.namespace), name)
        chosen = choose(args.action, name, data, app, args.kind)
        if isinstance(chosen, str):
            print(f"autocrane rollout: {chosen} in namespace {args.namespace}")
            return 1
        kind, found = chosen
        target = found["metadata"]["name"]
        version = None if args.action != "pin" or args.clear else args.version
        patch = spec_patch(args.action, dt.datetime.now(dt.UTC), version)
        where = approllouts.path(args.namespace, target) if kind == "app" else resource.path(args.namespace, target)
        await api.request("PATCH", where, body=patch, content_type=kube.MERGE_PATCH)
        done = {**RESULTS, "pin": f"pinned to {version}" if version else "unpinned"}[args.action]
        if kind == "data" and args.action == "abort":
            done = "aborted (the controller rolls back to the last known good at its next pass)"
        print(f"{'approllout' if kind == 'app' else 'datarollout'} {args.namespace}/{target}: {done}")
        return 0
    except errors.KubeError as exc:
        print(f"autocrane rollout: {exc}")
        return 1
    finally:
        await api.close()


async def _status(api: kube.Kube, args: argparse.Namespace, found: Mapping[str, Any] | None) -> int:
    """Print the data rollout's verdict; with ``--wait`` poll until it is final or ``--timeout`` passes."""
    first = [found]

    async def read() -> tuple[int, str]:
        one = first.pop() if first else find(await _data(api, args.namespace), args.source)
        if one is None:
            return PENDING, f"no DataRollout for source {args.source!r} in {args.namespace} yet"
        return verdict(one, args.version)

    return await _poll(args, read)


async def _app_status(api: kube.Kube, args: argparse.Namespace) -> int:
    """``rollout status GROUP`` of an app rollout: :func:`app_verdict`, polled like :func:`_status`."""

    async def read() -> tuple[int, str]:
        group = next((g for g in await _groups(api, args.namespace)
                      if (g.get("metadata") or {}).get("name") == args.source), None)
        if group is None:
            return PENDING, f"no AppRollout {args.source!r} in {args.namespace} yet"
        selector = {"labelSelector": f"{approllouts.GROUP_LABEL}={args.source}"}
        answer = await api.request("GET", f"/apis/apps/v1/namespaces/{args.namespace}/deployments", query=selector)
        return app_verdict(group, untrusted.mapping(answer).get("items") or ())

    return await _poll(args, read)


async def _poll(args: argparse.Namespace, read: Callable[[], Awaitable[tuple[int, str]]]) -> int:
    """Print each new verdict; with ``--wait`` read again until it is final or ``--timeout`` passes."""
    deadline = time.monotonic() + args.timeout
    said = ""
    while True:
        code, message = await read()
        if message != said:
            print(message, flush=True)
            said = message
        if code != PENDING or not args.wait:
            return code
        if time.monotonic() >= deadline:
            print(f"autocrane rollout status: still not finished after {args.timeout:g}s", flush=True)
            return PENDING
        await asyncio.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", type=Path, default=None)
    common.add_argument("--namespace", "-n", default="default")
    p = argparse.ArgumentParser(prog="autocrane rollout", description=(
        "Promote, abort, pin or list data rollouts; promote, abort, retry, pause or resume a group of staged "
        "Deployments (an app rollout)."))
    sub = p.add_subparsers(dest="action", required=True)
    for action, text in (("promote", "pass the current stage's gate now (data: or retry a held version)"),
                         ("abort", "roll the current stage back now (data: to the last known good, held)")):
        one = sub.add_parser(action, help=text, parents=[common])
        one.add_argument("name", metavar="SOURCE|GROUP", help="a data source, or an app rollout group")
        kind = one.add_mutually_exclusive_group()
        kind.add_argument("--app", dest="kind", action="store_const", const="app", help="the group's AppRollout")
        kind.add_argument("--data", dest="kind", action="store_const", const="data", help="the source's DataRollout")
    for action, text in (("retry", "roll the rejected templates of a group out again"),
                         ("pause", "release no further stage of a group (rollbacks still happen)"),
                         ("resume", "release a paused group's next stages again")):
        sub.add_parser(action, help=text, parents=[common]).add_argument("name", metavar="GROUP")
    pin = sub.add_parser("pin", help="put every pod on one version (or --clear the pin)", parents=[common])
    pin.add_argument("name", metavar="SOURCE")
    group = pin.add_mutually_exclusive_group(required=True)
    group.add_argument("version", nargs="?")
    group.add_argument("--clear", action="store_true")
    output.add_argument(sub.add_parser("list", help="the namespace's data and app rollouts", parents=[common]))
    status = sub.add_parser("status", parents=[common], help="is the rollout done? exit 0 done, 1 rolled back, "
                            "3 not yet (for CI: --wait)", description=(
                                "Exit 0 once the version (--version, else whatever rolls out) is the last known "
                                "good, 1 once it was rolled back, 3 while it is not finished; 1 also when the API "
                                "cannot be read. For an app rollout group: 0 once every Deployment of the group "
                                "runs its last known good template (the group Healthy), 1 once it was rolled back, "
                                "3 before. With --wait, wait for 0 or 1 up to --timeout."))
    status.add_argument("source", metavar="SOURCE|GROUP", help="a data source, or an app rollout group")
    kind = status.add_mutually_exclusive_group()
    kind.add_argument("--app", dest="kind", action="store_const", const="app", help="the group's AppRollout")
    kind.add_argument("--data", dest="kind", action="store_const", const="data", help="the source's DataRollout")
    status.add_argument("--version", help="the data version to wait for (default: the rollout's current one)")
    status.add_argument("--wait", action="store_true", help="wait until it succeeds or is rolled back")
    status.add_argument("--timeout", type=float, default=1800.0, help="seconds --wait waits (default 1800)")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between reads while waiting")
    p.set_defaults(kind=None)
    return p


def main(argv: list[str]) -> int:
    return asyncio.run(_run(parser().parse_args(argv)))
