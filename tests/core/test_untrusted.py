"""Outside values: bounded JSON, times that cannot overflow, short echoes."""

from __future__ import annotations

import datetime as dt

import pytest

from autocrane import untrusted


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-13-01T00:00:00Z",
                                  "", "yesterday", "2026-01-02T03:04:05Zjunk"])
def test_a_time_that_does_not_exist_in_utc_is_an_untrusted_value_error(text: str) -> None:
    with pytest.raises(untrusted.UntrustedValueError, match=r"status\.autocrane\.io/x"):
        untrusted.parse_time(text, what="status.autocrane.io/x")
    assert untrusted.timestamp(text) is None


def test_times_are_read_as_utc_with_or_without_an_offset() -> None:
    assert untrusted.parse_time("2026-01-02T03:04:05+01:00", what="t") == dt.datetime(2026, 1, 2, 2, 4, 5,
                                                                                      tzinfo=dt.UTC)
    assert untrusted.parse_time("2026-01-02T03:04:05", what="t").tzinfo == dt.UTC
    assert untrusted.timestamp("1970-01-01T00:01:00Z") == 60.0


@pytest.mark.parametrize("levels", [65, 1025, 100_000])
def test_json_nested_too_deep_is_refused_without_recursing(levels: int) -> None:
    with pytest.raises(untrusted.UntrustedValueError, match=r"body: .*(deeper than 64|not JSON)"):
        untrusted.json_value("[" * levels + "]" * levels, what="body", max_bytes=1 << 20)


def test_json_at_the_depth_limit_is_decoded() -> None:
    value = untrusted.json_value("[" * 64 + "]" * 64, what="body", max_bytes=1 << 20)
    assert untrusted.depth(value) == 64


def test_json_over_the_byte_limit_is_refused_before_decoding() -> None:
    with pytest.raises(untrusted.UntrustedValueError, match="11 bytes of JSON, more than the 10"):
        untrusted.json_value('"123456789"', what="x", max_bytes=10)


@pytest.mark.parametrize("data", ["{", "\\ud800", b"\\xff\\xfe", "[1,]"])
def test_what_is_not_json_is_refused(data: str | bytes) -> None:
    with pytest.raises(untrusted.UntrustedValueError, match="not JSON"):
        untrusted.json_value(data, what="x", max_bytes=100)


def test_shown_cuts_long_values_and_says_how_long_they_were() -> None:
    assert untrusted.shown("short") == "'short'"
    long = untrusted.shown("x" * 1_000_000)
    assert len(long) < 120
    assert "1000000 characters" in long
