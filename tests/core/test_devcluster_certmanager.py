"""devcluster.certmanager's pure parts (the processes are tested in tests/cluster/test_chart_certmanager.py)."""

from __future__ import annotations

from pathlib import Path

from devcluster import certmanager


def test_a_crd_is_named_after_its_file_as_controller_gen_writes_them() -> None:
    assert certmanager.crd_name(Path("deploy/crds/cert-manager.io_certificates.yaml")) == "certificates.cert-manager.io"
    assert certmanager.crd_name(Path("acme.cert-manager.io_challenges.yaml")) == "challenges.acme.cert-manager.io"

