"""Which OS packages are missing, and the error that names them."""

from __future__ import annotations

import pytest

from devcluster import hostpackages


def test_a_package_whose_command_is_present_is_not_missing() -> None:
    assert hostpackages.missing(["sh"]) == []


def test_a_package_without_its_command_is_missing() -> None:
    assert hostpackages.missing(["no-such-package-autocrane"]) == ["no-such-package-autocrane"]


def test_without_root_the_error_names_every_package_and_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostpackages.os, "geteuid", lambda: 1000)
    with pytest.raises(hostpackages.MissingPackages) as caught:
        hostpackages.ensure(["no-such-package-a", "no-such-package-b"], why="the real node")
    text = str(caught.value)
    assert "the real node needs the OS packages no-such-package-a, no-such-package-b" in text
    assert "apt-get install -y --no-install-recommends no-such-package-a no-such-package-b" in text
