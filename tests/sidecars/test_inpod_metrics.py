"""``/metrics`` of the in-pod servers: the datadeployer's syncs, bytes, failures and swaps; watchdoghealthz's
readiness and its flips."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from autocrane import clock, manifests, metrics, podinfo
from devcluster import downwardapi
from sidecars import watchdoghealthz
from sidecars.datadeploy import main, status
from tests.sidecars.servers import FakeRepository, serve_asgi
from tests.sidecars.test_datadeploy_modes import deployer, write_annotations
from tests.sidecars.test_datadeploy_sync import tree_archive


def _sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_the_datadeployer_counts_swaps_bytes_current_passes_and_failures(tmp_path: Path, repo: FakeRepository,
                                                                         url: str) -> None:
    v1 = repo.add("src", "v1", tree_archive("v1", files=3, size=1000))
    write_annotations(tmp_path / "annotations", {"metered": "src"}, {"metered": v1})
    d = deployer(tmp_path, url)
    assert _sample("autocrane_datadeploy_syncs_total", data_set="metered", result="swapped") is None
    d.refresh()
    assert _sample("autocrane_datadeploy_syncs_total", data_set="metered", result="failed") == 0  # from the start

    assert asyncio.run(d.step("metered")) is main.Outcome.DONE
    assert asyncio.run(d.step("metered")) is main.Outcome.DONE
    assert _sample("autocrane_datadeploy_syncs_total", data_set="metered", result="swapped") == 1
    assert _sample("autocrane_datadeploy_syncs_total", data_set="metered", result="current") == 1
    assert _sample("autocrane_datadeploy_swaps_total", data_set="metered") == 1
    assert (_sample("autocrane_datadeploy_extracted_bytes_total", data_set="metered") or 0) >= 3000
    assert _sample("autocrane_datadeploy_sync_duration_seconds_count", data_set="metered") == 1
    assert _sample("autocrane_datadeploy_failing_since_timestamp_seconds", data_set="metered") == 0

    write_annotations(tmp_path / "annotations", {"metered": "src"}, {"metered": manifests.DataRequest("v9")})
    d.refresh()
    assert asyncio.run(d.step("metered")) is main.Outcome.FAILED
    assert _sample("autocrane_datadeploy_syncs_total", data_set="metered", result="failed") == 1
    assert (_sample("autocrane_datadeploy_failing_since_timestamp_seconds", data_set="metered") or 0) > 0

    with serve_asgi(status.app(d.status)) as base:
        text = httpx.get(f"{base}/metrics").text
    assert 'autocrane_datadeploy_swaps_total{data_set="metered"} 1.0' in text

    write_annotations(tmp_path / "annotations", {}, {})
    d.refresh()
    assert _sample("autocrane_datadeploy_syncs_total", data_set="metered", result="swapped") is None  # forgotten


def test_watchdoghealthz_exports_its_answer_and_counts_each_flip(tmp_path: Path) -> None:
    path = tmp_path / "annotations"
    ok = {"status.autocrane.io/a": "info/2026-01-02T03:04:05Z/fine"}
    broken = {"status.autocrane.io/a": "error/2026-01-02T03:04:05Z/broken"}
    monitor = watchdoghealthz.Monitor(podinfo.Watcher(path), 0, time=clock.ManualClock())
    flips = {to: _sample("autocrane_watchdoghealthz_readiness_flips_total", to=to) or 0 for to in ("ready", "unready")}

    def flipped(to: str) -> float:
        return (_sample("autocrane_watchdoghealthz_readiness_flips_total", to=to) or 0) - flips[to]

    for values, ready, errors in ((ok, 1, 0), (ok, 1, 0), (broken, 0, 1), (ok, 1, 0)):
        path.write_text(downwardapi.format_annotations(values))
        monitor.tick()
        assert _sample("autocrane_watchdoghealthz_ready_info") == ready
        assert _sample("autocrane_watchdoghealthz_error_watchdogs_items") == errors
    assert (flipped("ready"), flipped("unready")) == (1, 1)  # the first answer is not a flip

    with serve_asgi(watchdoghealthz.app(monitor)) as base:
        text = httpx.get(f"{base}/metrics").text
    assert "autocrane_watchdoghealthz_ready_info 1.0" in text
