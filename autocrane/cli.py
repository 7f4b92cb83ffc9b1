"""The ``autocrane`` command: one entry point, one subcommand per program.

Subcommands are named here as ``"module:function"`` strings and imported only when run, so
``autocrane watchdog`` never loads the webhook's or the controller's dependencies. Each function
takes its own argument list and parses it (so ``autocrane SUB --help`` is the program's own help)
and returns an exit code. This is the only place that calls ``sys.exit``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# name -> (target, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "inject": ("webhook.render:main", "render injection offline into a Pod or workload YAML"),
    "webhook": ("webhook.server:main", "run the mutating admission webhook"),
    "controller": ("controller.run:main", "run the controller: watchdog probes, statuses and safe evictions"),
    "status": ("controller.status:main", "print pods with their watchdogs, health and data versions"),
    "rollout": ("controller.rolloutctl:main", "promote, abort, pin or list data rollouts (DataRollout objects)"),
    "datadeployer": ("sidecars.datadeploy.main:main", "in-pod: fetch, verify and atomically swap in data versions"),
    "datarepository": ("sidecars.datarepo.main:main", "serve versioned data archives polled from git, HTTP, dirs"),
    "watchdoghealthz": ("sidecars.watchdoghealthz:main", "in-pod: readiness from the pod's watchdog statuses"),
    "watchdog": ("sidecars.watchdog:main", "get or post a pod's watchdog status"),
    "testworkload": ("sidecars.testworkload:main", "demo app: a watchdog that fails on demand, its data version"),
    "version": ("autocrane.cli:print_version", "print AutoCrane's version"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items())
    return (
        "usage: autocrane [-h] COMMAND [ARGS...]\n\n"
        "AutoCrane: watchdogs, safe evictions and staged data deployments for Kubernetes.\n\n"
        f"commands:\n{rows}\n\n"
        "Run 'autocrane COMMAND --help' for a command's options."
    )


def print_version(argv: list[str]) -> int:
    from importlib import metadata

    if argv and argv[0] in ("-h", "--help"):
        print("usage: autocrane version\n\nPrint AutoCrane's version.")
        return 0
    print(metadata.version("autocrane"))
    return 0


def resolve(target: str) -> Callable[[list[str]], int]:
    module_name, _, function_name = target.partition(":")
    function: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), function_name)
    return function


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"autocrane: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return resolve(SUBCOMMANDS[name][0])(rest)
    except KeyboardInterrupt:
        return 130


def main() -> None:
    sys.exit(run(sys.argv[1:]))
