"""Fixtures of the image tests: the images, built once per session (minutes cold, nothing cached)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from devcluster import hostpackages, images
from tests import needs
from tests.images.imagekit import Container


@pytest.fixture(scope="session")
def buildah() -> images.Buildah:
    """buildah on the project's own storage; the tests skip (fail in CI) when it cannot run here."""
    try:
        hostpackages.ensure(images.OS_PACKAGES, why="the image tests")
    except hostpackages.MissingPackages as exc:
        needs.unavailable("buildah", str(exc))
    tool = images.Buildah(images.images_dir() / "buildah")
    probe = subprocess.run(tool.command("info"), capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        needs.unavailable("buildah", f"`buildah info` failed: {probe.stderr.strip()[-500:]}")
    return tool


@pytest.fixture(scope="session")
def built(buildah: images.Buildah) -> dict[str, images.Image]:
    """Every image, by name; a failing build fails the tests (it is not a missing part)."""
    return {image.name: image for image in images.ensure_images()}


@pytest.fixture
def container(buildah: images.Buildah, built: dict[str, images.Image]) -> Iterator[Callable[[str], Container]]:
    """A working container of the named image, removed after the test."""
    made: list[Container] = []

    def make(name: str) -> Container:
        made.append(Container(buildah, built[name]))
        return made[-1]

    yield make
    for c in made:
        c.remove()
