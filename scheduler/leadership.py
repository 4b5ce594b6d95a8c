"""Which scheduler leads: a lease in Redis, with a fencing token the database checks.

Any number of schedulers may run; one, the leader, consumes ingest, admits runs and runs
the watchdog (``scheduler.service`` says why ingest too), the others stand by. The leader
holds ``keys.SCHEDULER_LEADER`` (set only if absent, with a TTL, in one script that also
takes a token from ``INCR keys.SCHEDULER_FENCE``) and renews it every
``leader_renew_seconds`` through a script that renews only its own value.
A follower tries to take the lease as often; a killed leader's lease runs out after
``leader_lease_seconds`` and the next follower to try takes over.

A lease cannot stop a leader that was paused past its lease from acting when it wakes:
every admission and watchdog transaction therefore first raises the database fence to the
leader's token (``store.fence.hold``), and one whose token is lower than one already
recorded rolls back, so its decisions are never committed and never sent; it steps down.
"""

from __future__ import annotations

import time

import redis

from protocol import keys
from protocol.leader import Leader, current_leader

# Take the lease if nobody holds it: a fresh token, then the lease naming it, atomically
# (SET NX PX semantics; a token is drawn only by the scheduler that gets the lease).
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# Renew, or give up, the lease only while it still holds this leader's own value.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


__all__ = ["Leader", "Lease", "NotLeader", "current_leader"]


class NotLeader(Exception):
    """A fenced transaction found a later leader's token: this scheduler no longer leads."""


class Lease:
    """This scheduler's side of the lease. ``tick`` (every renew interval) renews it while
    held, or tries to take it; ``token`` is the fencing token while it is held."""

    def __init__(self, client: redis.Redis, name: str, lease_seconds: float) -> None:
        self.redis = client
        self.name = name
        self.ttl_ms = max(int(lease_seconds * 1000), 1)
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic; past it we no longer count on the lease
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def value(self) -> str:
        return f"{self.token} {self.name}"

    def held(self) -> bool:
        """Whether this scheduler leads: it holds a token and its last renewal is younger
        than the lease (a renewal that failed or stalled does not count). The database
        fence decides in the end; this keeps a lapsed leader from even trying."""
        return self.token is not None and time.monotonic() < self._valid_until

    def tick(self) -> bool:
        """Renew the lease if held, else try to take it; returns whether it is held."""
        started = time.monotonic()
        if self.token is not None:
            if self._renew(keys=[keys.SCHEDULER_LEADER], args=[self.value, self.ttl_ms]):
                self._valid_until = started + self.ttl_ms / 1000
                return True
            self.token = None  # it ran out and another took it: follow
        token = int(
            self._acquire(
                keys=[keys.SCHEDULER_LEADER, keys.SCHEDULER_FENCE], args=[self.name, self.ttl_ms]
            )
        )
        if token:
            self.token = token
            self._valid_until = started + self.ttl_ms / 1000
        return self.token is not None

    def step_down(self) -> None:
        """Stop leading: give the lease back if it is still ours (a later leader's is left
        alone), and follow."""
        if self.token is not None:
            try:
                self._release(keys=[keys.SCHEDULER_LEADER], args=[self.value])
            finally:
                self.token = None
                self._valid_until = 0.0
