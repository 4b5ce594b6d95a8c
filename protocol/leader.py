"""Who leads the schedulers, as anyone may read it from Redis (the API's /readyz, tools).

The lease itself is taken and renewed by the schedulers (``scheduler.leadership``).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from protocol import keys
from protocol.replies import as_text


@dataclass(frozen=True)
class Leader:
    """The lease as Redis holds it: who leads, with which token, for how much longer."""

    name: str
    token: int
    expires_in_ms: int


def current_leader(client: redis.Redis) -> Leader | None:
    """Who leads right now (None: nobody; a follower takes over within a renew interval)."""
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.SCHEDULER_LEADER)
    pipe.pttl(keys.SCHEDULER_LEADER)
    value, ttl = pipe.execute()
    if value is None:
        return None
    token, _, name = as_text(value).partition(" ")
    return Leader(name=name, token=int(token), expires_in_ms=max(int(ttl), 0))
