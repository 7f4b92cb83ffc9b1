"""The ``autocrane`` command: one entry point, one subcommand per program.

Subcommands are named here as ``"module:function"`` strings and imported only when run, so
``autocrane watchdog`` never loads the webhook's or the controller's dependencies. Each function
takes its own argument list and parses it (so ``autocrane SUB --help`` is the program's own help)
and returns an exit code. This is the only place that calls ``sys.exit``.

Each subcommand names the packaging extra it needs beyond the core dependencies (pyproject.toml):
the in-pod image holds only the core, so a command whose extra is missing says which one instead
of failing with a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple


class Subcommand(NamedTuple):
    target: str
    """``"module:function"``, imported only when the subcommand runs."""
    extra: str | None
    """The extra of pyproject.toml it needs; None: the core dependencies are enough."""
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "inject": Subcommand("webhook.render:main", "webhook", "render injection offline into a Pod or workload YAML"),
    "webhook": Subcommand("webhook.server:main", "webhook", "run the mutating admission webhook"),
    "controller": Subcommand("controller.run:main", "controller",
                             "run the controller: watchdog probes, statuses and safe evictions"),
    "status": Subcommand("controller.commands.status:main", "controller",
                         "print pods with their watchdogs, health and data versions"),
    "rollout": Subcommand("controller.commands.rollout:main", "controller",
                          "promote, abort, pin or list data rollouts (DataRollout objects)"),
    "datadeployer": Subcommand("sidecars.datadeploy.main:main", None,
                               "in-pod: fetch, verify and atomically swap in data versions"),
    "datarepository": Subcommand("sidecars.datarepo.main:main", "datarepository",
                                 "serve versioned data archives polled from git, HTTP, dirs"),
    "watchdoghealthz": Subcommand("sidecars.watchdoghealthz:main", None,
                                  "in-pod: readiness from the pod's watchdog statuses"),
    "watchdog": Subcommand("sidecars.watchdog:main", "kube", "get or post a pod's watchdog status"),
    "testworkload": Subcommand("sidecars.testworkload:main", None,
                               "demo app: a watchdog that fails on demand, its data version"),
    "version": Subcommand("autocrane.cli:print_version", None, "print AutoCrane's version"),
}

_OWN_PACKAGES = ("autocrane", "webhook", "controller", "sidecars")


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {command.help}" for name, command in SUBCOMMANDS.items())
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
    command = SUBCOMMANDS[name]
    try:
        function = resolve(command.target)
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if command.extra is None or not missing or missing in _OWN_PACKAGES:
            raise  # a core command or our own module: a broken installation, not a missing extra
        print(f"autocrane {name}: this installation lacks the {missing!r} package; "
              f"it needs the extra 'autocrane[{command.extra}]'", file=sys.stderr)
        return 1
    try:
        return function(rest)
    except KeyboardInterrupt:
        return 130


def main() -> None:
    sys.exit(run(sys.argv[1:]))
