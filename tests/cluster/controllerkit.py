"""Test kit for the controller on the real control plane: a watchdog fleet and the controller process.

:class:`Fleet` plays the workload: it watches a namespace's pods and, for each Running pod, serves
``GET /watchdog`` on the pod's own (loopback, KWOK-assigned) IP, answering 200 or 500 as the test
says. :class:`ControllerProcess` runs ``autocrane controller`` as a subprocess with the test
kubeconfig, fast timings and its logs in a file whose tail goes into failure messages.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devcluster import controlplane
from tests.cluster import harness
from tests.cluster.harness import wait_until

FAST = ["--interval", "0.3", "--error-observations", "2", "--error-seconds", "1", "--min-pod-age", "0",
        "--probe-timeout", "1", "--health-port", "0", "--log-level", "debug"]


def deployment(name: str, replicas: int, port: int, probe: str | None = None) -> dict[str, Any]:
    labels = {"app": name}
    notes = {"probe.autocrane.io/app": probe or f"POD_IP:{port}/watchdog"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": notes},
                              "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}},
    }


def live_pods(cluster: harness.Cluster, namespace: str, app: str) -> list[Any]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def ready_pods(cluster: harness.Cluster, namespace: str, app: str, count: int) -> list[Any]:
    def ready() -> list[Any]:
        pods = [p for p in live_pods(cluster, namespace, app) if p.status.phase == "Running" and p.status.pod_ip]
        return pods if len(pods) == count else []

    return wait_until(f"{count} running pods of {app}", ready)


def pod_events(cluster: harness.Cluster, namespace: str, pod: str, reason: str) -> list[Any]:
    events = cluster.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}").items
    return [e for e in events if e.reason == reason]


class Fleet:
    """Watchdog endpoints on the pods' IPs; ``failing`` holds the names of pods that answer 500,
    ``failing_images`` the container images whose pods do (a bad release)."""

    def __init__(self, cluster: harness.Cluster, namespace: str, port: int) -> None:
        self.cluster, self.namespace, self.port = cluster, namespace, port
        self.failing: set[str] = set()
        self.failing_images: set[str] = set()
        self.fail_everything = False
        self.hits: dict[str, int] = {}
        self.first_failure: dict[str, float] = {}
        """Pod name -> wall-clock time of its first 500."""
        self._names: dict[str, str] = {}
        self._images: dict[str, frozenset[str]] = {}
        self._servers: dict[str, http.server.ThreadingHTTPServer] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def code(self, ip: str) -> int:
        if self._fails(ip) and not self.fail_everything:
            # KWOK hands a deleted pod's IP to the next pod at once: before a 500, ask the API server which
            # pod holds the IP now, so a new pod is never failed for the one it replaced (a false rollback).
            self._learn(ip)
        name = self._names.get(ip, "")
        self.hits[name] = self.hits.get(name, 0) + 1
        failing = self._fails(ip)
        if failing:
            self.first_failure.setdefault(name, time.time())
        return 500 if failing else 200

    def _fails(self, ip: str) -> bool:
        return (self.fail_everything or self._names.get(ip, "") in self.failing
                or bool(self._images.get(ip, frozenset()) & self.failing_images))

    def _learn(self, ip: str) -> None:
        with contextlib.suppress(Exception):  # keep what the last poll saw
            for pod in self.cluster.core.list_namespaced_pod(self.namespace,
                                                             field_selector=f"status.podIP={ip}").items:
                self._record(pod)

    def _record(self, pod: Any) -> None:
        ip = pod.status.pod_ip
        if ip and pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None:
            self._names[ip] = pod.metadata.name
            self._images[ip] = frozenset(c.image for c in pod.spec.containers)

    def _serve(self, ip: str) -> None:
        fleet = self

        class Watchdog(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = fleet.code(ip)
                body = b"ok" if code == 200 else b"watchdog says: broken"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer((ip, self.port), Watchdog)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers[ip] = server

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):
                for pod in self.cluster.core.list_namespaced_pod(self.namespace).items:
                    self._record(pod)
                    ip = pod.status.pod_ip
                    if ip in self._names and ip not in self._servers:
                        self._serve(ip)

    def __enter__(self) -> Fleet:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for server in self._servers.values():
            server.shutdown()
            server.server_close()


free_port = controlplane.free_port


class ControllerProcess:
    """``autocrane controller`` against the test cluster, scoped to one namespace."""

    def __init__(self, cluster: harness.Cluster, namespace: str, *extra: str, identity: str = "test") -> None:
        self.identity = identity
        self.log_path = Path(tempfile.mkdtemp(prefix="controller-")) / "controller.log"
        self.command = [str(Path(sys.executable).parent / "autocrane"), "controller",
                        "--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace,
                        "--lease-namespace", namespace, "--identity", identity,
                        *FAST, *extra]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        with self.log_path.open("wb") as log:  # the child has its own descriptor; ours would leak
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def count(self, message: str, where: Callable[[dict[str, Any]], bool] = lambda _: True) -> int:
        return sum(1 for line in self.lines() if line.get("message") == message and where(line))

    def stop(self, timeout: float = 15) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


@contextlib.contextmanager
def controller(cluster: harness.Cluster, namespace: str, *extra: str, identity: str = "test"
               ) -> Iterator[ControllerProcess]:
    with running(ControllerProcess(cluster, namespace, *extra, identity=identity)) as proc:
        yield proc


@contextlib.contextmanager
def running(proc: ControllerProcess) -> Iterator[ControllerProcess]:
    """Start ``proc``; stop it and remove its log afterwards (printing the log's tail on failure)."""
    proc.start()
    try:
        yield proc
    except BaseException:
        print(f"--- controller {proc.identity} log tail ({proc.log_path}) ---\n{proc.tail()}")
        raise
    finally:
        proc.stop()
        shutil.rmtree(proc.log_path.parent, ignore_errors=True)
