"""A real Prometheus scrapes the AutoCrane programs on the local cluster and fires the chart's alerts end to end.

One Prometheus for the module (``tests/cluster/prometheuskit.py``: 1 s scrapes and evaluations, each
alert's ``for:`` shortened to 2 s; the rules file as shipped is tested by promtool in
tests/monitoring). The programs are the ones the other cluster tests run: the controller, the data
repository, a datadeployer per KWOK pod on the pod's loopback IP, the webhook and watchdoghealthz.

- A data rollout rolled back by a failing watchdog fires AutoCraneDataRolloutRolledBack, naming the
  namespace and the source; and every metric name an alert or a dashboard panel uses is one the
  running programs exposed to this Prometheus.
- A circuit breaker opened by a mass failure fires AutoCraneCircuitBreakerOpen (and
  AutoCraneWorkloadWatchdogErrors), naming the namespace and the ReplicaSet.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from devcluster import downwardapi
from tests.cluster import harness, prometheuskit, webhookkit
from tests.cluster.controllerkit import Fleet, controller, deployment, free_port, live_pods, ready_pods
from tests.cluster.datakit import DataFleet, Repository, install_crd
from tests.cluster.harness import wait_until
from tests.cluster.test_controller_rollouts import REQUEST, _all_on, _deployment, _flags, _status, _version
from tests.monitoring import monitoringkit

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _local_with_crd(cluster: harness.Cluster) -> None:
    if not cluster.local:
        pytest.skip("pods are served on loopback pod IPs only on the local KWOK control plane")
    install_crd(cluster)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[prometheuskit.Prometheus]:
    server = prometheuskit.Prometheus()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _watchdoghealthz(directory: Path, port: int) -> Iterator[None]:
    notes = directory / "annotations"
    notes.write_text(downwardapi.format_annotations({"status.autocrane.io/app": "info/2026-01-02T03:04:05Z/ok"}))
    with (directory / "watchdoghealthz.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", "from autocrane import cli; cli.main()", "watchdoghealthz",
                                    "--annotations-file", str(notes), "--host", "127.0.0.1", "--port", str(port),
                                    "--poll-seconds", "0.2", "--log-format", "text"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        process.wait(20)


@contextlib.contextmanager
def _webhook(directory: Path) -> Iterator[webhookkit.Injector]:
    """The webhook process (unregistered: only its /metrics is wanted here)."""
    directory.mkdir()
    running = webhookkit.Injector(directory)
    try:
        yield running
    finally:
        running.stop()


def _metrics(target: str) -> str:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


_ROLLOUT_STATUS = (sys.executable, "-c", "from autocrane import cli; cli.main()", "rollout", "status", "models")


def _rollout_status(cluster: harness.Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_ROLLOUT_STATUS, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)


def _host(url: str) -> str:
    return url.removeprefix("http://").rstrip("/")


def _scrape_each(prometheus: prometheuskit.Prometheus, targets: Mapping[str, tuple[str, dict[str, str]]]) -> None:
    for name, (target, labels) in targets.items():
        prometheus.scrape(name, [target], labels)


def test_a_rollout_rolled_back_by_a_failing_watchdog_fires_its_alert_and_every_metric_used_is_exposed(
    cluster: harness.Cluster, namespace: str, prometheus: prometheuskit.Prometheus, tmp_path: Path
) -> None:
    status_port, watchdog_port, health_port, healthz_port = free_port(), free_port(), free_port(), free_port()
    cluster.apps.create_namespaced_deployment(namespace, _deployment("web", 2, watchdog_port))
    ready_pods(cluster, namespace, "web", 2)
    bad: list[str] = []

    def broken(notes: Mapping[str, str]) -> bool:  # the app fails on the new data
        return bool(bad) and _version(notes.get(REQUEST)) == bad[0]

    here = {"namespace": namespace}
    with Repository() as repo, DataFleet(cluster, namespace, repo.url, status_port, watchdog_port, broken), \
            controller(cluster, namespace, *_flags(repo, status_port, bake=600), "--health-port", str(health_port)), \
            _webhook(tmp_path / "webhook") as webhook, \
            _watchdoghealthz(tmp_path, healthz_port):
        pods = {p.metadata.name: p.status.pod_ip for p in live_pods(cluster, namespace, "web")}
        targets = {
            "controller": (f"127.0.0.1:{health_port}", {**here, "pod": "controller"}),
            "datarepository": (_host(repo.url), {**here, "pod": "datarepository-0"}),
            "webhook": (f"127.0.0.1:{webhook.health_port}", {**here, "pod": "injector"}),
            "watchdoghealthz": (f"127.0.0.1:{healthz_port}", {**here, "pod": "healthz"}),
            **{f"datadeploy-{name}": (f"{ip}:{status_port}", {**here, "pod": name}) for name, ip in pods.items()},
        }
        _scrape_each(prometheus, targets)
        try:
            (v1,) = repo.versions
            wait_until("every pod on v1, acknowledged", lambda: _all_on(cluster, namespace, v1, 2))
            wait_until("Prometheus to scrape every program", lambda: all(prometheus.up(t) for t in targets))

            assert _rollout_status(cluster, namespace, "--version", v1).returncode == 0, "v1 is the last known good"
            bad.append(repo.publish("v2 (bad)"))
            published = time.monotonic()
            waiter = subprocess.Popen([*_ROLLOUT_STATUS, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig),
                                       "--version", bad[0], "--wait", "--timeout", "120", "--interval", "0.3"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            wait_until("the rollout rolled back", lambda: _status(cluster, namespace).get("phase") == "RolledBack")
            rolled_back = time.monotonic()
            said, _ = waiter.communicate(timeout=60)
            assert waiter.returncode == 1 and f"{bad[0]} was rolled back" in said, said  # what CI would see
            (fired,) = wait_until("AutoCraneDataRolloutRolledBack to fire", lambda: [
                a for a in prometheus.firing("AutoCraneDataRolloutRolledBack") if a.get("namespace") == namespace])
            print(f"\nv2 published -> RolledBack {rolled_back - published:.1f}s -> alert firing "
                  f"{time.monotonic() - rolled_back:.1f}s")
            assert fired["source"] == "models" and fired["severity"] == "warning"
            assert f"source models in {namespace} was rolled back" in " ".join(
                prometheus.summaries("AutoCraneDataRolloutRolledBack"))

            swaps = prometheus.api("query", query=f'sum(autocrane_datadeploy_swaps_total{{namespace="{namespace}"}})')
            assert float(swaps["result"][0]["value"][1]) >= 2, "each datadeployer swapped in v1 (and back)"
            used = monitoringkit.used_by_rules() | monitoringkit.used_by_dashboard()
            served = set().union(*(monitoringkit.exposition_names(_metrics(t)) for t, _ in targets.values()))
            assert used - served == set(), "names no running program's /metrics has"
            assert {"autocrane_controller_rollout_phase_info", "autocrane_datadeploy_swaps_total",
                    "autocrane_webhook_cert_expiry_timestamp_seconds", "autocrane_watchdoghealthz_ready_info",
                    "autocrane_datarepository_polls_total"} <= prometheus.known_names(), "one sample from each"
        finally:
            for name in targets:
                prometheus.forget(name)


def test_a_circuit_breaker_opened_by_a_mass_failure_fires_its_alert(
    cluster: harness.Cluster, namespace: str, prometheus: prometheuskit.Prometheus
) -> None:
    port, health_port = free_port(), free_port()
    cluster.apps.create_namespaced_deployment(namespace, deployment("web", 3, port))
    ready_pods(cluster, namespace, "web", 3)
    with Fleet(cluster, namespace, port) as fleet, controller(cluster, namespace, "--health-port", str(health_port)):
        prometheus.scrape("breaker-controller", [f"127.0.0.1:{health_port}"], {"namespace": namespace})
        try:
            wait_until("Prometheus to scrape the controller", lambda: prometheus.up("breaker-controller"))
            fleet.fail_everything = True
            failed = time.monotonic()
            (fired,) = wait_until("AutoCraneCircuitBreakerOpen to fire", lambda: [
                a for a in prometheus.firing("AutoCraneCircuitBreakerOpen") if a.get("namespace") == namespace])
            print(f"\nevery watchdog failing -> AutoCraneCircuitBreakerOpen firing {time.monotonic() - failed:.1f}s")
            (owner,) = {p.metadata.owner_references[0].name for p in live_pods(cluster, namespace, "web")}
            assert fired["owner"] == f"ReplicaSet/{owner}" and fired["severity"] == "critical"
            wait_until("AutoCraneWorkloadWatchdogErrors to fire too", lambda: [
                a for a in prometheus.firing("AutoCraneWorkloadWatchdogErrors")
                if a.get("namespace") == namespace and a.get("owner") == f"ReplicaSet/{owner}"])
        finally:
            prometheus.forget("breaker-controller")
