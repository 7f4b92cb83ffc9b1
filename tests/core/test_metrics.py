"""The metric naming rule and the /metrics endpoint."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from autocrane import metrics


def test_names_follow_autocrane_area_what_unit() -> None:
    assert metrics.name("webhook", "admission_duration", "seconds") == "autocrane_webhook_admission_duration_seconds"
    assert metrics.name("controller", "evictions", "total") == "autocrane_controller_evictions_total"


@pytest.mark.parametrize(("area", "what", "unit", "complaint"), [
    ("Webhook", "x", "seconds", "area"),
    ("webhook", "admission-duration", "seconds", "what"),
    ("webhook", "admission_duration", "milliseconds", "unit"),
    ("webhook", "duration_seconds", "seconds", "already ends"),
])
def test_names_that_break_the_rule_are_refused(area: str, what: str, unit: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        metrics.name(area, what, unit)


def test_the_endpoint_serves_the_registry_in_text_and_openmetrics() -> None:
    counter = metrics.counter("testing", "endpoint_hits", "for this test")
    counter.inc()
    with TestClient(Starlette(routes=[metrics.route()])) as client:
        text = client.get("/metrics")
        openmetrics = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert "autocrane_testing_endpoint_hits_total 1.0" in text.text
    assert text.headers["content-type"].startswith("text/plain")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
