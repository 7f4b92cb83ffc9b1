"""Every metric name an alert or a dashboard panel uses is exposed by a program's ``/metrics``.

The programs' metrics are module-level objects on one registry (``autocrane.metrics.REGISTRY``);
importing each program's metrics modules and reading the exposition the endpoint serves gives
the sample names a scrape sees. Renaming a metric (or dropping it) fails here, naming the rule
or panel that would go silent. The cluster test (tests/cluster/test_monitoring.py) checks the
same names against what a real Prometheus scraped from the running programs.
"""

from __future__ import annotations

import prometheus_client

import controller.metrics
import sidecars.datadeploy.metrics
import sidecars.datarepo.polling
import sidecars.watchdoghealthz
import webhook.metrics
from autocrane import metrics
from tests.monitoring import monitoringkit as kit

# Importing each program's metrics modules registers their metrics.
PROGRAMS = (webhook.metrics, controller.metrics, sidecars.datarepo.polling, sidecars.datadeploy.metrics,
            sidecars.watchdoghealthz)


def exposed() -> set[str]:
    """Every sample name the endpoint can serve, also for families without a sample yet."""
    return kit.exposition_names(prometheus_client.generate_latest(metrics.REGISTRY).decode())


def test_every_name_in_the_alert_rules_is_exposed() -> None:
    missing = {name: [r["alert"] for r in kit.rules() if name in r["expr"]] for name in kit.used_by_rules() - exposed()}
    assert missing == {}, "alerts over metrics no program exposes"


def test_every_name_in_the_dashboard_is_exposed() -> None:
    missing = {name: [t for t, e in kit.panel_exprs() if name in e] for name in kit.used_by_dashboard() - exposed()}
    assert missing == {}, "panels over metrics no program exposes"


def test_a_renamed_metric_is_caught() -> None:
    assert "autocrane_controller_circuit_breaker_open_info" in kit.used_by_rules() & exposed()
    assert "autocrane_controller_circuit_breaker_opened_info" not in exposed()
