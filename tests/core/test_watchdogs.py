"""Watchdog status values: parsing, formatting, validation and the health label."""

from __future__ import annotations

import datetime as dt

import pytest

from autocrane import watchdogs
from autocrane.watchdogs import Level

T = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_a_status_round_trips_through_its_annotation_value() -> None:
    status = watchdogs.Status(Level.WARNING, T, "slow: p99 / 2s")
    value = watchdogs.format_status(status)
    assert value == "warning/2026-01-02T03:04:05Z/slow: p99 / 2s"
    assert watchdogs.parse_status(value) == status


def test_levels_are_ordered_and_the_worst_wins() -> None:
    assert Level.INFO < Level.WARNING < Level.ERROR
    assert watchdogs.worst([Level.INFO, Level.ERROR, Level.WARNING]) is Level.ERROR
    assert watchdogs.worst([]) is None


def test_levels_are_case_insensitive_and_written_lower_case() -> None:
    assert watchdogs.parse_status("ERROR/2026-01-02T03:04:05Z/x").level is Level.ERROR
    assert str(Level.ERROR) == "error"


def test_an_unknown_level_is_rejected_naming_the_key() -> None:
    with pytest.raises(watchdogs.WatchdogError, match=r"status.autocrane.io/db: unknown level 'fatal'"):
        watchdogs.parse_status("fatal/2026-01-02T03:04:05Z/x", "status.autocrane.io/db")


def test_a_value_without_three_parts_or_with_a_bad_time_is_rejected() -> None:
    with pytest.raises(watchdogs.WatchdogError, match="<level>/<RFC3339 UTC time>/<message>"):
        watchdogs.parse_status("error-no-slashes", "k")
    with pytest.raises(watchdogs.WatchdogError, match="k: 'yesterday' is not an RFC3339 time"):
        watchdogs.parse_status("error/yesterday/x", "k")


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_a_time_out_of_range_in_utc_is_an_unreadable_status_not_a_crash(when: str) -> None:
    key = "status.autocrane.io/x"
    with pytest.raises(watchdogs.WatchdogError, match=f"{key}: .* is not an RFC3339 time"):
        watchdogs.parse_status(f"error/{when}/m", key)
    notes = {key: f"error/{when}/m", "status.autocrane.io/y": "info/2026-01-02T03:04:05Z/ok"}
    label, problems = watchdogs.health(notes)
    assert label == "error" and set(problems) == {"x"}


def test_times_with_offsets_become_utc_and_times_without_zone_are_utc() -> None:
    assert watchdogs.parse_time("2026-01-02T05:04:05+02:00") == T
    assert watchdogs.parse_time("2026-01-02T03:04:05") == T
    assert watchdogs.format_time(T.astimezone(dt.timezone(dt.timedelta(hours=-5)))) == "2026-01-02T03:04:05Z"


def test_long_messages_are_cut() -> None:
    value = watchdogs.format_status(watchdogs.Status(Level.INFO, T, "x" * 5000))
    assert len(value.split("/", 2)[2]) == watchdogs.MAX_MESSAGE


def test_watchdog_names_must_fit_an_annotation_key_and_not_be_health() -> None:
    assert watchdogs.status_key("db-1.x") == "status.autocrane.io/db-1.x"
    for bad in ("", "-x", "a/b", "x" * 64):
        with pytest.raises(watchdogs.WatchdogError):
            watchdogs.check_name(bad)
    with pytest.raises(watchdogs.WatchdogError, match="reserved"):
        watchdogs.check_name("health")


def test_health_is_the_worst_level_ignoring_other_annotations() -> None:
    annotations = {
        "status.autocrane.io/a": "info/2026-01-02T03:04:05Z/ok",
        "status.autocrane.io/b": "warning/2026-01-02T03:04:05Z/meh",
        "other.io/c": "error/2026-01-02T03:04:05Z/not ours",
    }
    assert watchdogs.health(annotations) == ("warning", {})


def test_no_statuses_means_unknown_health() -> None:
    assert watchdogs.health({}) == ("unknown", {})


def test_an_unreadable_status_counts_as_error_and_is_reported() -> None:
    label, problems = watchdogs.health({"status.autocrane.io/a": "info/2026-01-02T03:04:05Z/ok",
                                        "status.autocrane.io/b": "bogus"})
    assert label == "error"
    assert "status.autocrane.io/b" in problems["b"]
