"""Read-your-writes across processes: a ``Barrier`` entry, and waiting for the ingest to pass it.

Producers append to the ingest stream and return at once; the scheduler's ingest applies
entries in stream order. A write that Azure makes synchronous (``complete()``, ``tag()``,
``flush()``...) appends its events, then a barrier with a fresh waiter id, and blocks on
``keys.barrier(waiter)``. The ingest pushes there once the batch holding the barrier is
committed, so everything the writer appended before it is in the database, visible to every
reader. No polling on either side: one BLPOP.

The ingest is sharded (``protocol.streams``): a barrier is copied to every shard, behind
whatever was sent before it, with the number of copies beside it. Each shard's consumer
marks its copy passed once committed (a set, so a replayed copy counts once), and the last
one pushes to the waiter: nothing sent before the barrier, on any shard, is left unstored.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from protocol import keys
from protocol.messages import Barrier

# How long a synchronous write waits for the ingest before it says the service is behind.
WAIT_SECONDS = 60.0


def new() -> Barrier:
    return Barrier(waiter=secrets.token_hex(12))


# Mark one copy passed; push to the waiter once every copy is (a barrier without a count,
# from before sharding or sent to one stream, is passed by its one copy).
_PASS = """
local parts = tonumber(redis.call('GET', KEYS[1]) or '1')
if parts > 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  if redis.call('SCARD', KEYS[2]) < parts then
    return 0
  end
end
redis.call('RPUSH', KEYS[3], '1')
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""


def release(client: Any, waiters: Iterable[str], stream: str = keys.INGEST_STREAM) -> None:
    """Called by the ingest after the commit that covered these barriers' copies on
    ``stream``."""
    passing = client.register_script(_PASS)
    pipe = client.pipeline(transaction=False)
    for waiter in waiters:
        passing(
            keys=[keys.barrier_parts(waiter), keys.barrier_passed(waiter), keys.barrier(waiter)],
            args=[stream, keys.BARRIER_TTL],
            client=pipe,
        )
    pipe.execute()


def wait(client: Any, barrier: Barrier, timeout: float = WAIT_SECONDS) -> bool:
    """Block until the ingest has passed ``barrier`` (True) or ``timeout`` ran out."""
    return client.blpop([keys.barrier(barrier.waiter)], timeout=timeout) is not None


async def wait_async(client: Any, barrier: Barrier, timeout: float = WAIT_SECONDS) -> bool:
    return await client.blpop([keys.barrier(barrier.waiter)], timeout=timeout) is not None
