"""The ``autocrane`` command: every subcommand answers --help, unknown ones are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from autocrane import cli


def _autocrane(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", *args],
                          capture_output=True, text=True, timeout=60)


def test_top_level_help_lists_every_subcommand() -> None:
    result = _autocrane("--help")
    assert result.returncode == 0
    for name in cli.SUBCOMMANDS:
        assert f"  {name}" in result.stdout


INJECT_INPUT = Path(__file__).parents[1] / "webhook" / "testdata" / "deployment.yaml"


@pytest.mark.parametrize("args", [("--help",), ("completion", "bash"), ("inject", "-f", str(INJECT_INPUT))])
def test_a_reader_that_goes_away_ends_the_command_quietly(args: tuple[str, ...]) -> None:
    """``autocrane --help | head -1``: no traceback, and the exit status of a tool the pipe closed on."""
    read, write = os.pipe()
    os.close(read)  # gone before the first write: every write fails
    try:
        done = subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", *args],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == cli.SIGPIPE_EXIT


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_has_help(name: str) -> None:
    result = _autocrane(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: autocrane" in result.stdout


@pytest.mark.parametrize("action", ["build", "images", "up", "sweep"])
def test_devcluster_actions_have_help(action: str) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "devcluster", action, "--help"], cwd=root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"usage: python -m devcluster {action}" in result.stdout


def test_the_product_cli_has_no_development_commands() -> None:
    assert "devcluster" not in cli.SUBCOMMANDS


def test_unknown_subcommand_exits_2_with_usage() -> None:
    result = _autocrane("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr


def test_no_subcommand_prints_usage_and_exits_2() -> None:
    result = _autocrane()
    assert result.returncode == 2
    assert "usage: autocrane" in result.stdout


# Each image holds the core dependencies plus the extras of the programs it runs (pyproject.toml).
# These run a command with every other distribution made unimportable, so a module that imports
# beyond its extra fails here, long before an image is built.

_BLOCKING_RUNNER = """
import sys
blocked = set(sys.argv[1].split(","))

class Unavailable:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this install)", name=name)
        return None

sys.meta_path.insert(0, Unavailable())
sys.argv = ["autocrane", *sys.argv[2:]]
from autocrane import cli
cli.main()
"""


def _distributions(extras: frozenset[str]) -> set[str]:
    """The distributions that installing ``autocrane[extras]`` brings, transitively."""
    found: set[str] = set()
    todo = [("autocrane", extras)]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in done:
            continue
        done.add((name, wanted))
        found.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in wanted | {""}):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


def _modules_outside(extras: frozenset[str]) -> set[str]:
    """Top-level modules of the distributions the dev install has and ``autocrane[extras]`` does not."""
    extra_names = frozenset(metadata.metadata("autocrane").get_all("Provides-Extra") or ())
    outside = _distributions(extra_names - {"dev"}) - _distributions(extras)
    return {module for module, dists in metadata.packages_distributions().items()
            if all(canonicalize_name(d) in outside for d in dists)}


def _autocrane_without(blocked: set[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCKING_RUNNER, ",".join(sorted(blocked)), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_core_leaves_out_the_api_client_and_the_extras_dependencies() -> None:
    outside = _modules_outside(frozenset())
    assert {"kubernetes", "yaml", "aiohttp", "cryptography", "urllib3"} <= outside
    assert not {"starlette", "uvicorn", "orjson", "prometheus_client"} & outside  # /metrics in the pods too


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_each_subcommand_runs_with_the_core_and_its_own_extra_only(name: str) -> None:
    extra = cli.SUBCOMMANDS[name].extra
    result = _autocrane_without(_modules_outside(frozenset({extra} if extra else ())), name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: autocrane" in result.stdout


@pytest.mark.parametrize("name", sorted(n for n, c in cli.SUBCOMMANDS.items() if c.extra))
def test_a_subcommand_without_its_extra_names_the_extra(name: str) -> None:
    result = _autocrane_without(_modules_outside(frozenset()), name, "--help")
    assert result.returncode == 1
    assert f"it needs the extra 'autocrane[{cli.SUBCOMMANDS[name].extra}]'" in result.stderr
    assert "Traceback" not in result.stderr
