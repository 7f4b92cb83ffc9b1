"""The ``autocrane`` command: every subcommand answers --help, unknown ones are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autocrane import cli


def _autocrane(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", *args],
                          capture_output=True, text=True, timeout=60)


def test_top_level_help_lists_every_subcommand() -> None:
    result = _autocrane("--help")
    assert result.returncode == 0
    for name in cli.SUBCOMMANDS:
        assert f"  {name}" in result.stdout


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_has_help(name: str) -> None:
    result = _autocrane(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: autocrane" in result.stdout


@pytest.mark.parametrize("action", ["build", "up", "sweep"])
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
