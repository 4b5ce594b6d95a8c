"""The submit limiter charges a job array's runs atomically before its submission, so an
array refused for its runs never takes a submission, even when another request takes the
run budget between any test and the charge (the gap that made a refused array cost one)."""

from __future__ import annotations

from typing import Any

import pytest

from api.rate_limits import SubmitLimiter
from runyard.errors import RateLimited
from store.tokens import Actor

ACTOR = Actor(name="alice", role="member", token_id="t-1")


def limiter() -> SubmitLimiter:
    return SubmitLimiter("memory://", "2/minute", array_runs="10/hour")


def test_an_array_refused_for_its_runs_takes_no_submission() -> None:
    limits = limiter()
    limits.hit_array(ACTOR, 8)
    with pytest.raises(RateLimited, match="array run limit"):
        limits.hit_array(ACTOR, 5)
    limits.hit(ACTOR)  # the second of two submissions: the refused array took none


def test_a_run_budget_taken_by_another_request_mid_check_takes_no_submission() -> None:
    """Another replica takes the array budget right after any check of ours returns."""
    limits = limiter()
    real_test = limits.limiter.test
    item = limits.array_items[0]
    interfered: list[bool] = []

    def test_then_other_request(*args: Any, **kwargs: Any) -> bool:
        answer = real_test(*args, **kwargs)
        if not interfered:
            interfered.append(True)
            assert limits.limiter.hit(item, "array-runs", "t-1", cost=8)
        return answer

    limits.limiter.test = test_then_other_request  # type: ignore[method-assign]
    with pytest.raises(RateLimited, match="array run limit"):
        limits.hit_array(ACTOR, 5)
    limits.hit(ACTOR)
    limits.hit(ACTOR)  # both submissions are still there
    with pytest.raises(RateLimited, match="submission limit"):
        limits.hit(ACTOR)


def test_an_array_refused_for_submissions_costs_no_runs() -> None:
    limits = limiter()
    limits.hit(ACTOR)
    limits.hit(ACTOR)
    with pytest.raises(RateLimited, match="submission limit"):
        limits.hit_array(ACTOR, 10)
    assert limits.limiter.test(limits.array_items[0], "array-runs", "t-1", cost=10)
