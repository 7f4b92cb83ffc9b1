"""Probe results + current annotations -> the minimal status patch, only when something changed."""

from __future__ import annotations

from controller import pods
from controller.watchdogs import health
from controller.watchdogs.health import ProbeResult
from tests.controller.podfactory import NOW, pod, stamp

OK = ProbeResult("ok")
ERROR = ProbeResult("error", "http 500: boom")
UNKNOWN = ProbeResult("unknown", "no answer within 5s")
PROBE = {"probe.autocrane.io/app": "POD_IP:8080/watchdog"}
NOW_TEXT = stamp(0)


def test_a_slim_pod_keeps_only_autocrane_annotations_the_controller_owner_and_readiness() -> None:
    p = pod(annotations={**PROBE, "other.io/x": "y", "kubernetes.io/config.mirror": "abc"},
            labels={"status.autocrane.io/health": "info", "app": "web"})
    assert dict(p.annotations) == {**PROBE, "kubernetes.io/config.mirror": "abc"}
    assert p.health_label == "info" and p.mirror and p.ready
    assert p.owner == pods.Owner("ReplicaSet", "web-1", "uid-web-1")
    assert p.probes() == {"app": "POD_IP:8080/watchdog"}


def test_a_first_ok_probe_writes_an_info_status_and_the_health_label() -> None:
    change = health.change(pod(annotations=PROBE), {"app": OK}, NOW)
    assert change is not None
    assert change.patch == {"metadata": {
        "resourceVersion": "42",
        "annotations": {"status.autocrane.io/app": f"info/{NOW_TEXT}/probe: ok"},
        "labels": {"status.autocrane.io/health": "info"},
    }}


def test_nothing_is_written_when_an_ok_watchdog_stays_ok() -> None:
    p = pod(annotations={**PROBE, "status.autocrane.io/app": "info/2026-01-01T00:00:00Z/probe: ok"},
            labels={"status.autocrane.io/health": "info"})
    assert health.change(p, {"app": OK}, NOW) is None


def test_an_error_is_written_with_its_message_and_the_label_turns_error() -> None:
    p = pod(annotations={**PROBE, "status.autocrane.io/app": "info/2026-01-01T00:00:00Z/probe: ok"},
            labels={"status.autocrane.io/health": "info"})
    change = health.change(p, {"app": ERROR}, NOW)
    assert change is not None
    assert change.annotations == {"status.autocrane.io/app": f"error/{NOW_TEXT}/probe: http 500: boom"}
    assert change.health_label == "error"
    assert change.applied().annotations["status.autocrane.io/app"].startswith("error/")


def test_an_ongoing_error_keeps_its_time_and_is_not_rewritten() -> None:
    value = "error/2026-01-01T00:00:00Z/probe: http 500: boom"
    p = pod(annotations={**PROBE, "status.autocrane.io/app": value}, labels={"status.autocrane.io/health": "error"})
    assert health.change(p, {"app": ERROR}, NOW) is None


def test_an_error_whose_message_changes_keeps_the_time_it_started() -> None:
    p = pod(annotations={**PROBE, "status.autocrane.io/app": "error/2026-01-01T00:00:00Z/probe: http 500: boom"},
            labels={"status.autocrane.io/health": "error"})
    change = health.change(p, {"app": ProbeResult("error", "http 503")}, NOW)
    assert change is not None
    assert change.annotations == {"status.autocrane.io/app": "error/2026-01-01T00:00:00Z/probe: http 503"}
    assert change.health_label is None


def test_an_unknown_result_changes_nothing() -> None:
    p = pod(annotations={**PROBE, "status.autocrane.io/app": "error/2026-01-01T00:00:00Z/probe: x"},
            labels={"status.autocrane.io/health": "error"})
    assert health.change(p, {"app": UNKNOWN}, NOW) is None


def test_a_refused_probe_is_recorded_as_a_warning_not_an_error() -> None:
    change = health.change(pod(annotations=PROBE), {"app": ProbeResult("refused", "host 'x' is not ...")}, NOW)
    assert change is not None
    assert change.annotations["status.autocrane.io/app"].startswith("warning/")
    assert change.health_label == "warning"


def test_a_status_whose_probe_annotation_was_removed_is_cleared_and_the_label_follows() -> None:
    p = pod(annotations={"status.autocrane.io/app": "error/2026-01-01T00:00:00Z/probe: http 500"},
            labels={"status.autocrane.io/health": "error"})
    change = health.change(p, {}, NOW)
    assert change is not None
    assert change.patch["metadata"]["annotations"] == {"status.autocrane.io/app": None}
    assert change.health_label == "unknown"


def test_statuses_the_pod_posted_itself_are_never_cleared_but_count_for_the_label() -> None:
    p = pod(annotations={"status.autocrane.io/disk": "warning/2026-01-01T00:00:00Z/disk 91% full"})
    change = health.change(p, {}, NOW)
    assert change is not None
    assert change.annotations == {}
    assert change.health_label == "warning"
    assert "annotations" not in change.patch["metadata"]


def test_pods_without_probes_statuses_or_label_are_never_touched() -> None:
    assert health.change(pod(), {}, NOW) is None


def test_an_unreadable_status_is_overwritten_by_the_probe_result() -> None:
    p = pod(annotations={**PROBE, "status.autocrane.io/app": "garbage"}, labels={"status.autocrane.io/health": "error"})
    change = health.change(p, {"app": OK}, NOW)
    assert change is not None
    assert change.annotations == {"status.autocrane.io/app": f"info/{NOW_TEXT}/probe: ok"}
    assert change.health_label == "info"


def test_error_since_is_the_earliest_error_time_and_none_when_healthy() -> None:
    p = pod(annotations={"status.autocrane.io/a": "error/2026-01-01T00:00:10Z/x",
                         "status.autocrane.io/b": "error/2026-01-01T00:00:05Z/y",
                         "status.autocrane.io/c": "info/2026-01-01T00:00:00Z/z"})
    assert health.error_since(p) == stamp_to_posix("2026-01-01T00:00:05Z")
    assert health.error_since(pod()) is None


def stamp_to_posix(text: str) -> float:
    return pods.parse_time(text)
