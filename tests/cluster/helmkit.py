"""Running the chart through the helm binary the devcluster builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devcluster import build

CHART = Path(__file__).resolve().parents[2] / "charts" / "autocrane"


def helm(*args: str, kubeconfig: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run helm (skipping the test when it is not built), with ``--kubeconfig`` when given."""
    binary = build.bin_dir() / "helm"
    if not binary.exists():
        pytest.skip(f"helm is not built ({binary}); run 'python -m devcluster build'")
    extra = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run([str(binary), *args, *extra], capture_output=True, text=True, timeout=timeout)
