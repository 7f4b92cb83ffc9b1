"""Standing in for the kubelet: in-pod programs as local processes, fed from a real pod object.

- :class:`Kubelet` writes a pod's downward-API volume (``annotations`` and ``labels``) from the
  pod as the API server has it now, the way the kubelet's AtomicWriter does: the files live in a
  timestamped directory, ``..data`` is a symlink to it swapped with rename(2), and ``annotations``
  is a symlink to ``..data/annotations``. The file format is the kubelet's
  (``fieldpath.FormatMap``: sorted ``key="value"`` lines, the value quoted like Go's ``%q``),
  written by :func:`format_map`, a transcription of Go's ``strconv.Quote`` kept independent of
  :mod:`autocrane.podinfo` so the programs' parser is checked against Go's escaping, not against
  itself. The kubelet refreshes the volume on its sync loop; a test calls :meth:`Kubelet.sync`
  where that refresh would happen.
- :class:`Processes` starts ``autocrane`` subcommands with their output in log files, and stops
  every one of them at the end, also on failure.
- :class:`Repository` is a real ``autocrane datarepository`` serving one directory source.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from autocrane import keys
from devcluster import controlplane
from tests.cluster import harness
from tests.cluster.harness import wait_until

AUTOCRANE = (sys.executable, "-c", "from autocrane import cli; cli.main()")
free_port = controlplane.free_port
SOURCE = "greetings"
"""The repository's one source: a directory holding ``hello.txt``."""
DATA_SET = "greet"
DECLARE = {keys.DATA_PREFIX + DATA_SET: SOURCE}
"""The pod annotation declaring data set :data:`DATA_SET` from :data:`SOURCE`."""
REQUEST_KEY = keys.REQUEST_DATA_PREFIX + DATA_SET


def request_value(version: Mapping[str, Any], sha256: str | None = None) -> str:
    """``request.data.autocrane.io/<name>`` as the controller writes it (``sha256`` to make it lie)."""
    return json.dumps({"version": version["version"], "sha256": sha256 or version["sha256"]})


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v"}
TRICKY = 'say "hi" \\ back\nline two\ttab\x07bell \x7f é ✓ \u00a0nbsp \u2028 \U0001F600 \U000E0001tag'
"""An annotation value exercising every branch of Go's quoting; tests put it on their pods."""


def go_quote(value: str) -> str:
    """Go's ``strconv.Quote`` (``%q``): ``\\"`` and ``\\\\``, printable runes as is, ``\\a \\b \\f \\n
    \\r \\t \\v``, other control bytes ``\\xNN``, other unprintable runes ``\\uNNNN``/``\\UNNNNNNNN``.
    Python's ``isprintable`` matches Go's ``unicode.IsPrint`` for what the tests use."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """The kubelet's ``fieldpath.FormatMap``: ``%v=%q\\n`` per key in sorted order, last newline trimmed."""
    return "".join(f"{key}={go_quote(values[key])}\n" for key in sorted(values)).removesuffix("\n")


class Kubelet:
    """The downward-API volume of one pod, refreshed on demand from the API server."""

    def __init__(self, cluster: harness.Cluster, namespace: str, pod: str, directory: Path) -> None:
        self.cluster, self.namespace, self.pod, self.directory = cluster, namespace, pod, directory
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def annotations_file(self) -> Path:
        return self.directory / "annotations"

    def sync(self) -> dict[str, str]:
        """Rewrite the volume from the pod's current annotations and labels; return the annotations."""
        pod = self.cluster.core.read_namespaced_pod(self.pod, self.namespace)
        pod_annotations = dict(pod.metadata.annotations or {})
        self.write({"annotations": format_map(pod_annotations),
                    "labels": format_map(dict(pod.metadata.labels or {}))})
        return pod_annotations

    def write(self, files: Mapping[str, str]) -> None:
        """AtomicWriter: new timestamped dir, ``..data`` swapped to it, user-visible symlinks, old dir removed."""
        stamp = dt.datetime.now(dt.UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + secrets.token_hex(4)
        fresh = self.directory / stamp
        fresh.mkdir()
        for name, content in files.items():
            (fresh / name).write_text(content, encoding="utf-8")
        data = self.directory / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.directory / "..data_tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(stamp)
        os.replace(tmp, data)
        for name in files:
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if old is not None:
            for leftover in (self.directory / old).iterdir():
                leftover.unlink()
            (self.directory / old).rmdir()


    def lose_volume(self) -> None:
        """Make the files unreadable for a while (``..data`` gone), as a read racing the swap sees them."""
        data = self.directory / "..data"
        target = self.directory / os.readlink(data)
        data.unlink()
        for leftover in target.iterdir():
            leftover.unlink()
        target.rmdir()


class Process:
    """One running ``autocrane`` subcommand; its stdout and stderr go to ``log``."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: Mapping[str, str] | None) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                          env={**os.environ, **(env or {})})

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """True while running; an unexpected exit fails the test with the program's log."""
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
        return True

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:.0f}s:\n{self.output()[-3000:]}") from None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


class Processes:
    """Every process a test started; :meth:`stop_all` is called by the fixture, also on failure."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None,
              command: Sequence[str] | None = None) -> Process:
        """``autocrane ARGS...`` (or ``command`` as given), logging to ``<directory>/<name>.log``."""
        argv = list(command) if command is not None else [*AUTOCRANE, *args, "--log-format", "text"]
        proc = Process(name, argv, self.directory / f"{name}.log", env)
        self.started.append(proc)
        return proc

    def run(self, name: str, *args: str, timeout: float = 60.0, env: Mapping[str, str] | None = None,
            command: Sequence[str] | None = None) -> tuple[int, str]:
        """Run to completion within ``timeout``: (exit code, output)."""
        proc = self.start(name, *args, env=env, command=command)
        return proc.wait(timeout), proc.output()

    def stop_all(self) -> list[str]:
        """Stop every process still running; the logs of the ones that did not exit 0 on SIGTERM."""
        problems = []
        for proc in reversed(self.started):
            running = proc.popen.poll() is None
            code = proc.stop()
            if running and code != 0:
                problems.append(f"{proc.name} exited {code} on SIGTERM:\n{proc.output()[-2000:]}")
        return problems


def http_get(url: str, timeout: float = 5.0) -> httpx.Response | None:
    """GET without proxies from the environment; None when nothing answers (yet)."""
    try:
        return httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.TransportError:
        return None


def answers(url: str, status: int, proc: Process | None = None) -> httpx.Response | None:
    """The response if ``url`` answers ``status`` (for :func:`harness.wait_until`)."""
    if proc is not None:
        proc.alive()
    response = http_get(url)
    return response if response is not None and response.status_code == status else None


@dataclass
class Repository:
    """A real ``autocrane datarepository`` polling the directory ``upstream`` every 0.2 s as one source."""

    url: str
    upstream: Path
    state: Path
    process: Process
    source: str = SOURCE
    filename: str = "hello.txt"
    """The upstream file :meth:`publish` writes."""

    @classmethod
    def start(cls, processes: Processes, directory: Path, *, source: str = SOURCE, filename: str = "hello.txt",
              first: str | None = None) -> Repository:
        """Start it; with ``first``, the upstream file holds that text and its version is packed first."""
        upstream = directory / "upstream"
        upstream.mkdir()
        if first is not None:
            (upstream / filename).write_text(first)
        config = directory / "sources.yaml"
        config.write_text(f"sources:\n  - name: {source}\n    every: 0.2\n    directory: {{path: {upstream}}}\n")
        port = free_port()
        proc = processes.start("datarepository", "datarepository", "--config", str(config),
                               "--data-dir", str(directory / "repository"), "--host", "127.0.0.1", "--port", str(port))
        repo = cls(f"http://127.0.0.1:{port}", upstream, directory / "repository", proc, source, filename)
        wait_until("the repository's /readyz", lambda: answers(f"{repo.url}/readyz", 200, proc), timeout=30)
        if first is not None:
            wait_until(f"the first version of {source}", lambda: proc.alive() and repo.versions(), timeout=30)
        return repo

    def manifest(self) -> dict[str, Any]:
        response = http_get(f"{self.url}/v1/sources/{self.source}")
        return dict(response.json()) if response is not None and response.status_code == 200 else {}

    def versions(self) -> list[dict[str, Any]]:
        return list(self.manifest().get("versions", []))

    def publish(self, text: str) -> dict[str, Any]:
        """Change the upstream file; the new version, once the repository has packed it."""
        before = len(self.versions())
        (self.upstream / self.filename).write_text(text)
        wait_until(f"version {before + 1} of {self.source}",
                   lambda: self.process.alive() and len(self.versions()) > before, timeout=30)
        return self.versions()[-1]

    def archive(self, version: dict[str, Any]) -> Path:
        """Where the repository keeps ``version``'s archive (for tests that corrupt it)."""
        return self.state / "archives" / f"{version['sha256']}.tar.gz"
