"""A real Prometheus for the cluster tests: it scrapes the AutoCrane programs the test runs and evaluates the
chart's alert rules, with every ``for:`` shortened (the rules file itself is tested by promtool).

Targets are given per job through file-based discovery (re-read every second), so a test adds the
programs it starts; every job keeps the programs' own labels (``honor_labels``), as the chart's
ServiceMonitor does, and each target is labelled with the ``namespace`` and ``pod`` a Kubernetes
scrape would give it. Scrapes and rule evaluations run every second; everything stays on loopback.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from devcluster import controlplane
from tests.cluster.harness import wait_until
from tests.monitoring import monitoringkit

SHORT_FOR = "2s"


def _short_rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(monitoringkit.RULES.read_text())
    for group in loaded["groups"]:
        for rule in group["rules"]:
            rule["for"] = SHORT_FOR
    return loaded


class Prometheus:
    def __init__(self) -> None:
        binaries = monitoringkit.binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        (self.dir / "targets").mkdir()
        (self.dir / "rules.yaml").write_text(yaml.safe_dump(_short_rules()))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.dir / "rules.yaml")],
            "scrape_configs": [{"job_name": "autocrane", "honor_labels": True, "file_sd_configs": [
                {"files": [str(self.dir / "targets" / "*.json")], "refresh_interval": "1s"}]}],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = controlplane.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(binaries.prometheus), f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h"], stdout=log, stderr=subprocess.STDOUT)
        wait_until("Prometheus to be ready", self._ready, timeout=60)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def scrape(self, name: str, targets: Sequence[str], labels: Mapping[str, str]) -> None:
        """Scrape ``targets`` (host:port) as ``name``, with these target labels (namespace, pod...)."""
        path = self.dir / "targets" / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": {"program": name, **labels}}]))
        tmp.rename(path)

    def forget(self, name: str) -> None:
        (self.dir / "targets" / f"{name}.json").unlink(missing_ok=True)

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def up(self, program: str) -> bool:
        """Whether every target of ``program`` was scraped successfully at least once."""
        found = self.api("query", query=f'up{{program="{program}"}}')["result"]
        return bool(found) and all(r["value"][1] == "1" for r in found)

    def firing(self, alert: str) -> list[dict[str, str]]:
        """The labels of each firing instance of ``alert``."""
        return [a["labels"] for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == alert and a["state"] == "firing"]

    def summaries(self, alert: str) -> list[str]:
        return [a["annotations"]["summary"] for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == alert and a["state"] == "firing"]

    def known_names(self) -> set[str]:
        """Every sample name a scrape delivered, and every family a target declared (with or without samples)."""
        names = set(self.api("label/__name__/values"))
        for family, entries in self.api("metadata").items():
            names.add(family)
            if any(e["type"] == "histogram" for e in entries):
                names |= {family + suffix for suffix in ("_bucket", "_sum", "_count")}
        return names

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
