"""The chart's alert rules and dashboard as the tests read them, the metric names they use, and promtool."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from devcluster import prometheus
from tests import needs

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "charts/autocrane/monitoring"
RULES = MONITORING / "alerts.yaml"
DASHBOARD = MONITORING / "dashboard.json"
RULE_TESTS = Path(__file__).with_name("alerts_test.yaml")
_NAME = re.compile(r"\bautocrane_[a-z0-9_]+\b")


def rules() -> list[dict[str, Any]]:
    """Every rule of the rules file, in order."""
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_exprs(board: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard, template variables' included."""
    board = board or dashboard()
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append((f"variable {variable['name']}", query["query"]))
    return found


def metric_names(text: str) -> set[str]:
    return set(_NAME.findall(text))


def used_by_rules() -> set[str]:
    return {name for rule in rules() for name in metric_names(rule["expr"])}


def used_by_dashboard() -> set[str]:
    return {name for _, expr in panel_exprs() for name in metric_names(expr)}


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exposition_names(text: str) -> set[str]:
    """Every sample name a ``/metrics`` text can carry, from its ``# TYPE`` lines (families without a sample too)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names |= {base + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    return names


@functools.cache
def _binaries() -> prometheus.Binaries | str:
    try:
        return prometheus.ensure()
    except prometheus.Unavailable as error:
        return str(error)


def binaries() -> prometheus.Binaries:
    """promtool and prometheus (Debian's package, unpacked into the cache), or skip/fail saying why."""
    found = _binaries()
    if isinstance(found, str):
        needs.unavailable("promtool", found)
    return found
