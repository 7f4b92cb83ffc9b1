"""Test kit for data rollouts on the real control plane: a data repository and a fleet of data pods.

KWOK runs no containers, so the test plays the pods' parts:

- :class:`Repository` runs a real ``autocrane datarepository`` on 127.0.0.1 with one directory
  source; :meth:`Repository.publish` writes new content and waits for the version it becomes.
- :class:`DataFleet` follows a namespace's pods. For each Running pod it starts a real
  ``autocrane datadeployer --mode sidecar`` bound to the pod's (loopback) IP and status port, and
  keeps that pod's downward-API annotations file up to date from the pod object (standing in
  for the kubelet, which would refresh the file on its sync loop; here within ~0.2 s). It also
  serves the app's ``GET /watchdog`` on the pod's IP, answering 500 while ``broken(annotations)``
  says so, so a test can make "the app" fail on a given data version.

A real datadeployer rather than a fake status server: the acknowledgement the controller gates
on is then the real one (request annotation -> downward-API file -> fetch, verify, swap ->
``GET /status``), over the same wire format the pods use.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devcluster import downwardapi
from tests.cluster import harness, podkit
from tests.cluster.harness import wait_until

CRD = Path(__file__).resolve().parents[2] / "charts" / "autocrane" / "files" / "crds" / "datarollouts.autocrane.io.yaml"
"""The CRD as the chart renders it into templates (crds.install), without its labels and annotations."""
AUTOCRANE = str(Path(sys.executable).parent / "autocrane")


def install_crd(cluster: harness.Cluster, crd: Path = CRD) -> None:
    """Create (or keep) the CRD in ``crd`` (the DataRollout's by default) and wait until it is served."""
    body = yaml.safe_load(crd.read_text())
    extensions = client.ApiextensionsV1Api(cluster.api)
    try:
        extensions.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = extensions.read_custom_resource_definition(body["metadata"]["name"])
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(body["metadata"]["name"], body)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(body["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or ()))

    plural = body["spec"]["names"]["plural"]
    wait_until(f"the {plural} CRD established", established)
    objects = client.CustomObjectsApi(cluster.api)
    wait_until(f"{plural} served", lambda: _lists(objects, plural))


def _lists(objects: client.CustomObjectsApi, plural: str) -> bool:
    try:
        objects.list_cluster_custom_object("autocrane.io", "v1alpha1", plural)
    except ApiException:
        return False
    return True


class Repository:
    """``podkit.Repository`` as a context manager that owns its process, serving the source
    ``models`` seeded with ``v1``; versions are given by id, as the rollout tests compare them."""

    def __init__(self, source: str = "models") -> None:
        self.source = source
        self.dir = Path(tempfile.mkdtemp(prefix="datarepo-"))
        self._processes = podkit.Processes(self.dir)

    def __enter__(self) -> Repository:
        try:
            self._repo = podkit.Repository.start(self._processes, self.dir, source=self.source, filename="model.txt",
                                                 first="v1")
        except BaseException:
            self.__exit__()
            raise
        self.url = self._repo.url
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._processes.stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def manifest(self) -> dict[str, Any]:
        return self._repo.manifest()

    @property
    def versions(self) -> list[str]:
        return [v["version"] for v in self._repo.versions()]

    def publish(self, text: str) -> str:
        """Write new content; return the version id it becomes."""
        return str(self._repo.publish(text)["version"])


class DataFleet:
    """Datadeployer sidecars and app watchdogs on the pods' IPs, and their annotations files."""

    def __init__(self, cluster: harness.Cluster, namespace: str, repository: str, status_port: int,
                 watchdog_port: int, broken: Callable[[Mapping[str, str]], bool] = lambda _: False,
                 plays: Callable[[str], bool] = lambda _: True) -> None:
        self.cluster, self.namespace, self.repository = cluster, namespace, repository
        self.status_port, self.watchdog_port = status_port, watchdog_port
        self.broken = broken
        self.plays = plays
        """Which pods (by name) the fleet plays; a test plays the others itself."""
        self.dir = Path(tempfile.mkdtemp(prefix="datafleet-"))
        self.annotations: dict[str, dict[str, str]] = {}
        """By pod IP, as last written to the pod's file."""
        self.deployers: dict[str, subprocess.Popen[bytes]] = {}
        self._servers: dict[str, http.server.ThreadingHTTPServer] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _serve_watchdog(self, ip: str) -> None:
        fleet = self

        class Watchdog(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                bad = fleet.broken(fleet.annotations.get(ip, {}))
                body = b"model says: broken" if bad else b"ok"
                self.send_response(500 if bad else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer((ip, self.watchdog_port), Watchdog)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers[ip] = server

    def _start_deployer(self, ip: str, notes_file: Path) -> None:
        root = self.dir / ip / "root"
        root.mkdir(parents=True, exist_ok=True)
        with (self.dir / ip / "datadeployer.log").open("wb") as log:  # the child has its own descriptor
            self.deployers[ip] = subprocess.Popen(
                [AUTOCRANE, "datadeployer", "--mode", "sidecar", "--repository", self.repository, "--root", str(root),
                 "--annotations-file", str(notes_file), "--host", ip, "--port", str(self.status_port),
                 "--poll-seconds", "0.1", "--log-format", "text"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _sync(self) -> None:
        for pod in self.cluster.core.list_namespaced_pod(self.namespace).items:
            ip = pod.status.pod_ip
            if not ip or pod.status.phase != "Running" or pod.metadata.deletion_timestamp is not None \
                    or not self.plays(pod.metadata.name):
                continue
            notes = dict(pod.metadata.annotations or {})
            notes_file = self.dir / ip / "annotations"
            if self.annotations.get(ip) != notes:
                notes_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = notes_file.with_suffix(".tmp")
                tmp.write_text(downwardapi.format_annotations(notes))
                os.replace(tmp, notes_file)  # atomic, like the kubelet's ..data swap
                self.annotations[ip] = notes
            if ip not in self.deployers:
                self._start_deployer(ip, notes_file)
            if ip not in self._servers:
                self._serve_watchdog(ip)

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):
                self._sync()

    def __enter__(self) -> DataFleet:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for proc in self.deployers.values():
            proc.kill()
        for proc in self.deployers.values():
            proc.wait(10)
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

