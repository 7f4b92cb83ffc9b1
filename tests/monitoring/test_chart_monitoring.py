"""The chart's monitoring objects, rendered by ``helm template``: metrics Services with scrape annotations,
the Prometheus Operator's ServiceMonitor and PodMonitor, the PrometheusRule and the dashboard ConfigMap."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from autocrane import inpod
from tests.cluster import helmkit
from tests.monitoring import monitoringkit as kit

EVERYTHING = ("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true",
              "metrics.prometheusRule.enabled=true", "metrics.dashboard.enabled=true")


def _render(*values: str) -> list[dict[str, Any]]:
    sets = [a for v in values for a in ("--set", v)]
    result = helmkit.helm("template", "ac", str(helmkit.CHART), "-n", "sys", *sets)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _metrics_services(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _kind(docs, "Service") if d["metadata"]["name"].endswith("-metrics")}


def test_by_default_each_component_has_a_metrics_service_with_scrape_annotations_on_its_health_port() -> None:
    docs = _render()
    services = _metrics_services(docs)
    assert set(services) == {"ac-injector-metrics", "ac-controller-metrics", "ac-datarepository-metrics"}
    workloads = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment") + _kind(docs, "StatefulSet")}
    for service, deployment in (("ac-injector-metrics", "ac-injector"), ("ac-controller-metrics", "ac-controller"),
                                ("ac-datarepository-metrics", "ac-datarepository")):
        spec, pod = services[service]["spec"], workloads[deployment]["spec"]["template"]
        assert spec["selector"].items() <= pod["metadata"]["labels"].items(), f"{service} selects {deployment}"
        (port,) = spec["ports"]
        served = {p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert port["targetPort"] in served, f"{service} targets a port {deployment} serves"
        assert services[service]["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true", "prometheus.io/port": str(port["port"]), "prometheus.io/path": "/metrics"}
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [d for d in _kind(docs, "ConfigMap") if d["metadata"]["name"] == "ac-dashboard"]


def test_each_metrics_service_and_the_annotations_have_their_own_value() -> None:
    every = {"ac-injector-metrics", "ac-controller-metrics", "ac-datarepository-metrics"}
    assert set(_metrics_services(_render("metrics.service.webhook=false"))) == every - {"ac-injector-metrics"}
    assert set(_metrics_services(_render("metrics.service.controller=false"))) == every - {"ac-controller-metrics"}
    assert set(_metrics_services(_render("controller.enabled=false"))) == every - {"ac-controller-metrics"}
    without = every - {"ac-datarepository-metrics"}
    assert set(_metrics_services(_render("metrics.service.dataRepository=false"))) == without
    elsewhere = _render("dataRepository.enabled=false", "dataRepository.externalURL=http://r")
    assert set(_metrics_services(elsewhere)) == without
    plain = _metrics_services(_render("metrics.service.scrapeAnnotations=false"))
    assert all("annotations" not in s["metadata"] for s in plain.values())


def test_the_service_monitor_selects_exactly_the_metrics_services_and_keeps_their_namespace_label() -> None:
    docs = _render(*EVERYTHING, "metrics.serviceMonitor.labels.release=prom")
    (monitor,) = _kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    chosen = {d["metadata"]["name"] for d in _kind(docs, "Service")
              if wanted.items() <= d["metadata"]["labels"].items()}
    assert chosen == set(_metrics_services(docs))
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["sys"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True


def test_the_pod_monitor_scrapes_the_ports_the_injector_adds_in_every_namespace() -> None:
    (monitor,) = _kind(_render(*EVERYTHING), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    ports = {e["port"]: e["path"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert ports == {inpod.DATADEPLOYER_PORT_NAME: inpod.METRICS_PATH,
                     inpod.WATCHDOGHEALTHZ_PORT_NAME: inpod.METRICS_PATH}


def test_the_prometheus_rule_is_the_rules_file_with_a_runbook_for_each_alert() -> None:
    (rule,) = _kind(_render(*EVERYTHING, "metrics.prometheusRule.ruleLabels.team=platform",
                            "metrics.prometheusRule.ruleLabels.severity=none"), "PrometheusRule")
    rendered = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    def essence(rules: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [(r["alert"], r["expr"], r["for"]) for r in rules]

    assert essence(rendered) == essence(kit.rules())
    headings = set(re.findall(r"^### (AutoCrane\w+)$", (kit.ROOT / "docs/monitoring.md").read_text(), re.MULTILINE))
    for mine, theirs in zip(rendered, kit.rules(), strict=True):
        assert mine["labels"] == {**theirs["labels"], "team": "platform"}, "the alert's own severity wins"
        assert mine["annotations"]["summary"] == theirs["annotations"]["summary"]
        base, _, anchor = mine["annotations"]["runbook_url"].partition("#")
        assert base.endswith("/docs/monitoring.md") and anchor == mine["alert"].lower()
        assert mine["alert"] in headings, f"docs/monitoring.md has no runbook for {mine['alert']}"


def test_the_dashboard_config_map_carries_the_dashboard_with_the_grafana_sidecar_label() -> None:
    docs = _render(*EVERYTHING, "metrics.dashboard.namespace=grafana",
                   "metrics.dashboard.annotations.grafana_folder=AC")
    (board,) = [d for d in _kind(docs, "ConfigMap") if d["metadata"]["name"] == "ac-dashboard"]
    assert board["metadata"]["namespace"] == "grafana"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "AC"}
    assert json.loads(board["data"]["autocrane.json"]) == kit.dashboard()


def test_monitoring_values_the_schema_does_not_know_are_refused() -> None:
    result = helmkit.helm("template", "ac", str(helmkit.CHART), "--set", "metrics.serviceMonitor.intervall=1m")
    assert result.returncode != 0 and "intervall" in result.stderr
