"""Per-token rate limits, counted in Redis so every API replica shares them."""

from __future__ import annotations

import time

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from runyard.errors import RateLimited
from store.tokens import Actor


class SubmitLimiter:
    """``settings.submit_rate_limit`` (e.g. "120/minute;2000/hour") per token."""

    def __init__(self, redis_url: str, spec: str) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        self.limiter = MovingWindowRateLimiter(storage_from_string(redis_url))

    def hit(self, actor: Actor) -> None:
        key = actor.token_id or actor.name
        for item in self.items:
            if not self.limiter.hit(item, "submit", key):
                reset, _ = self.limiter.get_window_stats(item, "submit", key)
                wait = max(1, int(reset - time.time()))
                raise RateLimited(
                    f"{actor.name!r} is over its submission limit ({item}); retry in {wait} s"
                )
