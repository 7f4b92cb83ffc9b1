"""The one back-off: doubling from the first delay up to the cap, and jitter that only shortens."""

from __future__ import annotations

import pytest

from autocrane import backoff


def test_delays_double_from_the_first_up_to_the_cap() -> None:
    delays = backoff.Backoff(first=15.0, cap=300.0)
    assert [delays.delay(n) for n in range(7)] == [0.0, 15.0, 30.0, 60.0, 120.0, 240.0, 300.0]


def test_a_very_long_failure_run_stays_at_the_cap_without_overflowing() -> None:
    assert backoff.Backoff(first=0.5, cap=30.0).delay(5000) == 30.0


def test_jitter_draws_from_the_lower_part_of_the_delay_only() -> None:
    delays = backoff.Backoff(first=1.0, cap=30.0, jitter=0.5)
    assert delays.delay(3, uniform=lambda low, high: low) == 2.0
    assert delays.delay(3, uniform=lambda low, high: high) == 4.0
    assert all(2.0 <= delays.delay(3) <= 4.0 for _ in range(200))


@pytest.mark.parametrize(("first", "cap", "factor", "jitter"), [
    (0.0, 1.0, 2.0, 0.0), (2.0, 1.0, 2.0, 0.0), (1.0, 2.0, 0.5, 0.0), (1.0, 2.0, 2.0, 1.0)])
def test_a_back_off_that_cannot_work_is_refused(first: float, cap: float, factor: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="back-off needs"):
        backoff.Backoff(first, cap, factor, jitter)
