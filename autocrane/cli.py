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
import os
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
    "check-inject": Subcommand("webhook.checkinject:main", "webhook",
                               "explain why a pod (by name, or in a YAML file) would or would not be injected"),
    "webhook": Subcommand("webhook.server:main", "webhook", "run the mutating admission webhook"),
    "controller": Subcommand("controller.run:main", "controller",
                             "run the controller: watchdog probes, statuses and safe evictions"),
    "status": Subcommand("controller.commands.status:main", "controller",
                         "print pods with their watchdogs, health and data versions"),
    "rollout": Subcommand("controller.commands.rollout:main", "controller",
                          "promote, abort, pin or list data rollouts (DataRollout objects)"),
    "check": Subcommand("controller.commands.check:main", "controller",
                        "check an installation: CRDs, webhook and caBundle, leader, repository, dry-run injection"),
    "datadeployer": Subcommand("sidecars.datadeploy.main:main", None,
                               "in-pod: fetch, verify and atomically swap in data versions"),
    "datarepository": Subcommand("sidecars.datarepo.main:main", "datarepository",
                                 "serve versioned data archives polled from git, HTTP, dirs"),
    "watchdoghealthz": Subcommand("sidecars.watchdoghealthz:main", None,
                                  "in-pod: readiness from the pod's watchdog statuses"),
    "watchdog": Subcommand("sidecars.watchdog:main", "kube", "get or post a pod's watchdog status"),
    "testworkload": Subcommand("sidecars.testworkload:main", None,
                               "demo app: a watchdog that fails on demand, its data version"),
    "version": Subcommand("autocrane.cli:print_version", None, "print AutoCrane's version (also --version)"),
    "completion": Subcommand("autocrane.cli:completion", None, "print a bash or zsh completion script"),
}

# Completes the command names, then each command's flags as its own --help lists them (so it never
# goes stale); `kubectl autocrane` (the plugin, kubectl-autocrane on PATH) completes the same way.
_BASH_COMPLETION = """\
_autocrane() {
    local current=${COMP_WORDS[COMP_CWORD]}
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%(commands)s --help --version" -- "$current"))
    elif [[ $current == -* ]]; then
        local flags
        flags=$("${COMP_WORDS[0]}" "${COMP_WORDS[1]}" --help 2>/dev/null | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u)
        COMPREPLY=($(compgen -W "$flags" -- "$current"))
    else
        COMPREPLY=()
    fi
}
complete -o default -F _autocrane autocrane kubectl-autocrane
"""

_OWN_PACKAGES = ("autocrane", "webhook", "controller", "sidecars")


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {command.help}" for name, command in SUBCOMMANDS.items())
    return (
        "usage: autocrane [-h] [--version] COMMAND [ARGS...]   (or: kubectl autocrane ...)\n\n"
        "AutoCrane: watchdogs, safe evictions and staged data deployments for Kubernetes.\n\n"
        f"commands:\n{rows}\n\n"
        "Run 'autocrane COMMAND --help' for a command's options."
    )


def print_version(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: autocrane version\n\nPrint AutoCrane's version.")
        return 0
    print(version())
    return 0


def version() -> str:
    from importlib import metadata

    return metadata.version("autocrane")


def completion(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("bash", "zsh"):
        print("usage: autocrane completion bash|zsh\n\nPrint a completion script for the shell; e.g. "
              "`source <(autocrane completion bash)` in ~/.bashrc.")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    script = _BASH_COMPLETION % {"commands": " ".join(SUBCOMMANDS)}
    if argv[0] == "zsh":  # zsh runs bash completion functions through bashcompinit
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    print(script, end="")
    return 0


def resolve(target: str) -> Callable[[list[str]], int]:
    module_name, _, function_name = target.partition(":")
    function: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), function_name)
    return function


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        print(f"autocrane {version()}")
        return 0
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


SIGPIPE_EXIT = 141
"""What a shell reports for a command whose reader went away (128 + SIGPIPE), as for any Unix tool."""


def main() -> None:
    try:
        try:
            code: int | str | None = run(sys.argv[1:])
        except SystemExit as exit_:  # argparse's --help and usage errors
            code = exit_.code
        sys.stdout.flush()  # here, not at exit: a closed pipe is then ours to handle
    except BrokenPipeError:
        # `autocrane status | head`: the reader has what it wanted. Point stdout at /dev/null so the
        # interpreter's own flush at exit cannot fail again, and end quietly (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = SIGPIPE_EXIT
    sys.exit(code)
