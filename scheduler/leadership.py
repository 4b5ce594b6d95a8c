"""Which scheduler leads: a lease in Redis, with a fencing token the database checks.

Any number of schedulers may run; one, the leader, admits runs and runs the watchdog,
and every one of them consumes a share of the ingest shards (``scheduler.service``). The leader
holds ``keys.SCHEDULER_LEADER`` (set only if absent, with a TTL, in one script that also
takes a token from ``INCR keys.SCHEDULER_FENCE``) and renews it every
``leader_renew_seconds`` through a script that renews only its own value.
A follower tries to take the lease as often; a killed leader's lease runs out after
``leader_lease_seconds`` and the next follower to try takes over.

A lease cannot stop a leader that was paused past its lease from acting when it wakes:
every admission and watchdog transaction therefore first raises the database fence to the
leader's token (``store.fence.hold``), and one whose token is lower than one already
recorded rolls back, so its decisions are never committed and never sent; it steps down.

The same lease, one per ingest shard (``Shards``), says which scheduler consumes which
shard: every live scheduler holds about ``ceil(shards / live schedulers)`` of them, and
one holding more than its share gives the surplus back at renewal for a newcomer to take.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable

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


__all__ = ["Leader", "Lease", "NotLeader", "Shards", "current_leader", "live_schedulers", "share"]


class NotLeader(Exception):
    """A fenced transaction found a later leader's token: this scheduler no longer leads."""


class Lease:
    """This scheduler's side of a lease (the leader's, or an ingest shard's). ``tick``
    (every renew interval) renews it while held, or tries to take it; ``token`` is the
    fencing token while it is held."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        lease_seconds: float,
        key: str = keys.SCHEDULER_LEADER,
        fence: str = keys.SCHEDULER_FENCE,
    ) -> None:
        self.redis = client
        self.name = name
        self.key = key
        self.fence = fence
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
        """Whether this scheduler holds the lease: it holds a token and its last renewal is
        younger than the lease (a renewal that failed or stalled does not count). The
        database fence decides in the end; this keeps a lapsed holder from even trying."""
        return self.token is not None and time.monotonic() < self._valid_until

    def tick(self) -> bool:
        """Renew the lease if held, else try to take it; returns whether it is held."""
        return self.renew() or self.take()

    def renew(self) -> bool:
        """Renew the lease if this scheduler holds it; False (and let go) if it lapsed."""
        if self.token is None:
            return False
        started = time.monotonic()
        if self._renew(keys=[self.key], args=[self.value, self.ttl_ms]):
            self._valid_until = started + self.ttl_ms / 1000
            return True
        self.token = None  # it ran out and another took it: follow
        self._valid_until = 0.0
        return False

    def take(self) -> bool:
        """Take the lease if nobody holds it (with a fresh token); whether it is held."""
        started = time.monotonic()
        token = int(self._acquire(keys=[self.key, self.fence], args=[self.name, self.ttl_ms]))
        if token:
            self.token = token
            self._valid_until = started + self.ttl_ms / 1000
        return self.token is not None

    def step_down(self) -> None:
        """Stop holding: give the lease back if it is still ours (a later holder's is left
        alone), and follow."""
        if self.token is not None:
            try:
                self._release(keys=[self.key], args=[self.value])
            finally:
                self.token = None
                self._valid_until = 0.0


def share(shards: int, live: int) -> int:
    """How many shards each of ``live`` schedulers holds at most: enough that together
    they hold every one."""
    return math.ceil(shards / max(live, 1))


def live_schedulers(client: redis.Redis, name: str, lease_seconds: float) -> int:
    """Announce this scheduler for one lease (Redis' clock) and count the ones announced:
    a killed one stops counting when its shard leases run out, so its shards are taken."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    pipe = client.pipeline(transaction=True)
    pipe.zadd(keys.SCHEDULER_MEMBERS, {name: now_ms + int(lease_seconds * 1000)})
    pipe.zremrangebyscore(keys.SCHEDULER_MEMBERS, "-inf", now_ms)
    pipe.zcard(keys.SCHEDULER_MEMBERS)
    return int(pipe.execute()[-1])


def leave_members(client: redis.Redis, name: str) -> None:
    """A scheduler stopping cleanly stops counting at once."""
    client.zrem(keys.SCHEDULER_MEMBERS, name)


LeaseFactory = Callable[[int], Lease]


class Shards:
    """The ingest shards this scheduler consumes, each under a lease of its own (the
    leader's ``Lease`` on ``keys.ingest_shard_lease``). ``tick`` renews them, gives back
    what is beyond this scheduler's share, and takes free ones up to it."""

    def __init__(
        self,
        client: redis.Redis | None,
        name: str,
        count: int,
        lease_seconds: float,
        lease: LeaseFactory | None = None,
    ) -> None:
        self.name = name
        self.count = count

        def shard_lease(shard: int) -> Lease:
            assert client is not None
            return Lease(
                client,
                name,
                lease_seconds,
                key=keys.ingest_shard_lease(shard),
                fence=keys.ingest_shard_fence(shard),
            )

        make = lease or shard_lease
        self.leases = {shard: make(shard) for shard in range(count)}
        # Where this scheduler starts looking for free shards: schedulers starting together
        # try different ones first.
        self._first = zlib.crc32(name.encode()) % count

    def held(self) -> list[int]:
        """The shards this scheduler may read now (lease held and fresh)."""
        return [shard for shard, lease in self.leases.items() if lease.held()]

    def tick(self, live: int) -> tuple[list[int], list[int]]:
        """Renew, balance; returns the shards newly taken and the ones let go (lost to a
        later holder, or given back as surplus)."""
        let_go = [
            s for s, lease in self.leases.items() if lease.token is not None and not lease.renew()
        ]
        owned = [s for s, lease in self.leases.items() if lease.token is not None]
        target = share(self.count, live)
        for shard in owned[target:]:
            self.leases[shard].step_down()
            let_go.append(shard)
        owned = owned[:target]
        taken: list[int] = []
        for offset in range(self.count):
            if len(owned) + len(taken) >= target:
                break
            shard = (self._first + offset) % self.count
            if self.leases[shard].token is None and self.leases[shard].take():
                taken.append(shard)
        return taken, sorted(let_go)

    def release(self) -> None:
        """On a clean stop: every shard back at once."""
        for lease in self.leases.values():
            lease.step_down()
