"""What a test does when a real part it needs (buildah, a node...) cannot run on this machine.

In CI (``$CI`` set, as ``.ci/run`` does) that is a failure: CI machines are meant to run every
real part, so a test must not pass by skipping. Elsewhere the test skips and says why.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(part: str, reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{part} cannot run here, and CI needs it: {reason}", pytrace=False)
    pytest.skip(f"{part} cannot run here: {reason}")
