"""Prometheus and promtool for the monitoring tests: Debian's ``prometheus`` package, unpacked, not installed.

The tests need two static Go binaries: ``promtool`` (``check rules``, ``test rules``) and
``prometheus`` (a real server that scrapes the local cluster's programs and evaluates the
chart's alert rules). Debian bookworm's package has both (2.42, which has ``promtool test
rules``). It is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into the
cache (``~/.cache/autocrane/prometheus``), because installing it would do more than we want:
its maintainer scripts add a system user and start a Prometheus daemon listening on :9090 on
every interface, and its dependencies are the web console's JavaScript. A Go module build of
``github.com/prometheus/prometheus/cmd/{prometheus,promtool}`` was the other way: it compiles
every service-discovery SDK (AWS, Azure, GCE, ...) on two cores, many minutes of CI's budget
for the same two binaries.

One fetch at a time per machine (a lock file); a second caller waits and finds them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devcluster import build

PACKAGE = "prometheus"


class Unavailable(RuntimeError):
    """The package could not be fetched or unpacked; the message says why and what to run."""


@dataclasses.dataclass(frozen=True, slots=True)
class Binaries:
    prometheus: Path
    promtool: Path


def directory() -> Path:
    return build.cache_dir() / "prometheus"


def _found(root: Path) -> Binaries | None:
    found = Binaries(root / "usr/bin/prometheus", root / "usr/bin/promtool")
    return found if found.prometheus.is_file() and found.promtool.is_file() else None


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _fetch(into: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise Unavailable("the Debian package prometheus is fetched with apt-get and dpkg-deb, and this machine has "
                          "neither; put promtool and prometheus 2.x in " + str(into / "usr/bin"))
    with tempfile.TemporaryDirectory(dir=into.parent) as scratch:
        where = Path(scratch)
        result = _run(["apt-get", "download", PACKAGE], where)
        if result.returncode != 0 and os.geteuid() == 0:  # no package lists yet (a fresh machine)
            _run(["apt-get", "update", "-q"], where)
            result = _run(["apt-get", "download", PACKAGE], where)
        debs = sorted(where.glob(f"{PACKAGE}_*.deb"))
        if result.returncode != 0 or not debs:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-10:])
            raise Unavailable(f"`apt-get download {PACKAGE}` failed:\n{tail}")
        unpacked = where / "root"
        result = _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], where)
        if result.returncode != 0 or _found(unpacked) is None:
            raise Unavailable(f"`dpkg-deb -x {debs[0].name}` gave no usr/bin/prometheus and promtool: {result.stderr}")
        shutil.rmtree(into, ignore_errors=True)
        unpacked.rename(into)


def ensure() -> Binaries:
    """The two binaries, fetched and unpacked into the cache the first time."""
    root = directory()
    found = _found(root)
    if found is not None:
        return found
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".prometheus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _found(root)
        if found is None:
            _fetch(root)
            found = _found(root)
    if found is None:
        raise Unavailable(f"prometheus and promtool are missing from {root} after unpacking")
    return found
