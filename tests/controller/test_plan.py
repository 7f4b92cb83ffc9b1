"""The plan's own logic: which decisions act after their status writes."""

from __future__ import annotations

import dataclasses

from controller import plan


@dataclasses.dataclass(frozen=True)
class _Decided:
    status: plan.RolloutStatus | None


def test_only_decisions_whose_status_landed_or_that_had_none_act() -> None:
    landed = _Decided(plan.RolloutStatus("a", "model", {}))
    refused = _Decided(plan.RolloutStatus("b", "model", {}))  # a conflict: decided again next pass
    unchanged = _Decided(None)
    assert plan.status_landed([landed, refused, unchanged], {("a", "model")}) == [landed, unchanged]
