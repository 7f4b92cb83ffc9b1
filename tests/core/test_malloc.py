"""autocrane.malloc: large blocks go back to the system when freed (the webhook's settled RSS, issue 8)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Frees one 1 MiB block (glibc then raises its mmap threshold past 1 MiB), allocates 64 more between
# small live blocks, frees the large ones and prints how many MiB went back to the system.
_PROBE = """
import sys
from pathlib import Path
from autocrane import malloc

def rss() -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) * 1024

if sys.argv[1] == "tuned" and not malloc.return_large_blocks():
    print("not glibc")
    sys.exit(0)
first = bytearray(1 << 20)
del first
large, small = [], []
for _ in range(64):
    large.append(bytearray(1 << 20))
    small.append(bytearray(4096))
before = rss()
del large
print((before - rss()) >> 20)
"""


def _returned_mib(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_freed_large_blocks_are_returned_to_the_system() -> None:
    returned = _returned_mib("tuned")
    if returned == "not glibc":
        pytest.skip("the C library is not glibc: mallopt is not there to set")
    assert int(returned) >= 60, f"only {returned} MiB of 64 went back"


def test_without_it_glibc_keeps_them_which_is_what_the_webhook_saw() -> None:
    """The reason for the setting (on glibc): the same blocks stay in the process."""
    returned = _returned_mib("plain")
    if _returned_mib("tuned") == "not glibc":
        pytest.skip("the C library is not glibc")
    assert int(returned) < 8
