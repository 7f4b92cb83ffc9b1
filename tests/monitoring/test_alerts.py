"""The chart's alert rules: promtool checks them and runs their unit tests; each alert fires and stays quiet."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.monitoring import monitoringkit as kit


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(kit.binaries().promtool), *args], capture_output=True, text=True, timeout=120,
                          cwd=kit.RULE_TESTS.parent)


def test_promtool_checks_the_rules_file() -> None:
    result = _promtool("check", "rules", str(kit.RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(kit.rules())} rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet_as_its_promtool_tests_say() -> None:
    result = _promtool("test", "rules", kit.RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(kit.RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in cases["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = set(kit.alert_names())
    assert alerts - firing == set(), "alerts without a case that fires"
    assert alerts - quiet == set(), "alerts without a case where they stay quiet"
    assert (firing | quiet) - alerts == set(), "cases for alerts the rules file does not have"


def test_every_alert_has_a_severity_a_for_and_a_summary_naming_the_namespace_and_object() -> None:
    for rule in kit.rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert re.fullmatch(r"[0-9]+[smh]", rule.get("for", "")), f"{name}: a `for:` duration"
        summary = rule["annotations"]["summary"]
        if rule["expr"].startswith("absent("):
            continue  # no series, so no labels to name: the summary says so
        assert "$labels.namespace" in summary, f"{name}: the summary names the namespace"
        objects = ("$labels.owner", "$labels.source", "$labels.group", "$labels.pod", "$labels.data_set")
        assert any(o in summary for o in objects) or "webhook" in summary or "controller" in summary, name
