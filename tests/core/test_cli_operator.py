"""The operator's CLI around the programs: --version, shell completion, the kubectl plugin, -o json|yaml."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from devcluster import build, downwardapi

BIN = Path(sys.executable).parent
AUTOCRANE = str(BIN / "autocrane")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=env)


def test_version_flag_prints_the_installed_version() -> None:
    result = _run(AUTOCRANE, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"autocrane {metadata.version('autocrane')}"


def _complete(words: list[str]) -> list[str]:
    script = _run(AUTOCRANE, "completion", "bash").stdout
    line = " ".join(f"'{w}'" for w in words)
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _autocrane; echo "${{COMPREPLY[@]}}"'
    result = _run("bash", "-c", program, env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_offers_the_commands_and_each_commands_own_flags() -> None:
    assert _complete(["autocrane", "sta"]) == ["status"]
    assert "--output" in _complete(["autocrane", "status", "--out"])
    assert "--data-repository" in _complete(["kubectl-autocrane", "controller", "--data"])


def test_completion_without_a_shell_says_how_to_use_it() -> None:
    result = _run(AUTOCRANE, "completion")
    assert result.returncode == 2 and "autocrane completion bash|zsh" in result.stdout
    assert _run(AUTOCRANE, "completion", "zsh").stdout.startswith("autoload -U +X bashcompinit")


def test_kubectl_finds_the_plugin_on_path() -> None:
    kubectl = build.bin_dir() / "kubectl"
    if not kubectl.exists():
        pytest.skip(f"kubectl is not built ({kubectl}); run 'python -m devcluster build'")
    result = _run(str(kubectl), "autocrane", "--version", env={**os.environ, "PATH": f"{BIN}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"autocrane {metadata.version('autocrane')}"


def test_watchdog_get_prints_json_and_yaml(tmp_path: Path) -> None:
    notes = tmp_path / "annotations"
    notes.write_text(downwardapi.format_annotations({"status.autocrane.io/app": "warning/2026-01-02T03:04:05Z/slow"}))
    want = {"app": {"level": "warning", "time": "2026-01-02T03:04:05Z", "message": "slow"}}
    for form, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        result = _run(AUTOCRANE, "watchdog", "get", "--annotations-file", str(notes), "-o", form)
        assert result.returncode == 0, result.stderr
        assert load(result.stdout) == want
    table = _run(AUTOCRANE, "watchdog", "get", "--annotations-file", str(notes)).stdout
    assert table.strip() == "app warning 2026-01-02T03:04:05Z slow"
