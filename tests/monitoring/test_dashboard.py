"""The dashboard's JSON, checked structurally (no dashboard linter installs from the registries here:
``github.com/grafana/dashboard-linter`` is refused by the Go module proxy), and every query parsed by
Prometheus' own parser (through ``promtool check rules``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.monitoring import monitoringkit as kit

PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "gauge", "state-timeline", "text"}


def test_the_dashboard_has_an_identity_a_datasource_variable_and_a_schema_version() -> None:
    board = kit.dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["datasource"]["uid"] == "${datasource}"


def test_panels_have_unique_ids_known_types_a_place_and_queries_on_the_chosen_datasource() -> None:
    panels = kit.dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24 and place["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in kit.dashboard()["panels"]:
        place = panel["gridPos"]
        for x in range(place["x"], place["x"] + place["w"]):
            for y in range(place["y"], place["y"] + place["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]


def test_the_sections_the_issue_lists_are_there() -> None:
    rows = [p["title"] for p in kit.dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Watchdogs", "Evictions", "Data and application rollouts", "Webhook", "Data repository",
                    "Controller"]


def test_every_query_parses(tmp_path: Path) -> None:
    """Each query as a recording rule, with Grafana's variables given values, through promtool's parser."""
    exprs = [expr.replace("$__rate_interval", "5m").replace("$namespace", ".*") for _, expr in kit.panel_exprs()]
    exprs = [e.removeprefix("label_values(").rsplit(",", 1)[0] if e.startswith("label_values(") else e
             for e in exprs]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"autocrane:panel{i}", "expr": e}
                                                       for i, e in enumerate(exprs)]}]}
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([str(kit.binaries().promtool), "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
