"""Per-token rate limits, counted in Redis so every API replica shares them."""

from __future__ import annotations

import time

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from runyard.errors import RateLimited
from store.tokens import Actor

# Runs queued through job arrays, per token, besides the submissions themselves.
DEFAULT_ARRAY_RUN_LIMIT = "20000/hour"


class SubmitLimiter:
    """``settings.submit_rate_limit`` (e.g. "120/minute;2000/hour") per token; a job array
    is one submission, and its runs are also counted against a budget of their own
    (``settings.array_run_rate_limit``, in runs), so a sweep need not wait for the
    per-request limit while a token still cannot queue runs without bound."""

    def __init__(
        self, redis_url: str, spec: str, array_runs: str = DEFAULT_ARRAY_RUN_LIMIT
    ) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        self.array_items: list[RateLimitItem] = parse_many(array_runs)
        self.limiter = MovingWindowRateLimiter(storage_from_string(redis_url))

    def hit(self, actor: Actor) -> None:
        key = actor.token_id or actor.name
        for item in self.items:
            if not self.limiter.hit(item, "submit", key):
                self._refuse(actor, item, "submit", key, "submission limit")

    def hit_array(self, actor: Actor, runs: int) -> None:
        """One submission and ``runs`` array runs. The array's runs are charged first, each
        window in one atomic step (no gap between a test and its charge), and only then the
        submission: a refused array takes no submission. The submission limit is tested
        (not charged) beforehand, so an array refused for it costs no runs either; only
        when another request takes the last submission between that test and the charge
        does a refused array keep its runs charged."""
        key = actor.token_id or actor.name
        for item in self.array_items:
            if item.amount < runs:
                raise RateLimited(
                    f"a job array of {runs} runs is over {actor.name!r}'s array run limit "
                    f"({item}) by itself; split it"
                )
        for item in self.items:
            if not self.limiter.test(item, "submit", key):
                self._refuse(actor, item, "submit", key, "submission limit")
        for item in self.array_items:
            if not self.limiter.hit(item, "array-runs", key, cost=runs):
                self._refuse(actor, item, "array-runs", key, f"array run limit ({runs} asked)")
        self.hit(actor)

    def _refuse(self, actor: Actor, item: RateLimitItem, scope: str, key: str, what: str) -> None:
        reset, _ = self.limiter.get_window_stats(item, scope, key)
        wait = max(1, int(reset - time.time()))
        raise RateLimited(f"{actor.name!r} is over its {what} ({item}); retry in {wait} s")
