"""Leader election: the Lease timing rule (the election itself runs on the real control plane)."""

from __future__ import annotations

import pytest

from controller.apiserver import leader


def test_leader_timing_must_keep_lease_above_deadline_above_retries() -> None:
    leader.Timing(15, 10, 2)
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        leader.Timing(10, 10, 2)
    with pytest.raises(ValueError):
        leader.Timing(15, 2, 2)
