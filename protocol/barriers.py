"""Read-your-writes across processes: a ``Barrier`` entry, and waiting for the ingest to pass it.

Producers append to the ingest stream and return at once; the scheduler's ingest applies
entries in stream order. A write that Azure makes synchronous (``complete()``, ``tag()``,
``flush()``...) appends its events, then a barrier with a fresh waiter id, and blocks on
``keys.barrier(waiter)``. The ingest pushes there once the batch holding the barrier is
committed, so everything the writer appended before it is in the database, visible to every
reader. No polling on either side: one BLPOP.
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


def release(client: Any, waiters: Iterable[str]) -> None:
    """Called by the ingest after the commit that covered these barriers."""
    pipe = client.pipeline(transaction=False)
    for waiter in waiters:
        pipe.rpush(keys.barrier(waiter), "1")
        pipe.expire(keys.barrier(waiter), keys.BARRIER_TTL)
    pipe.execute()


def wait(client: Any, barrier: Barrier, timeout: float = WAIT_SECONDS) -> bool:
    """Block until the ingest has passed ``barrier`` (True) or ``timeout`` ran out."""
    return client.blpop([keys.barrier(barrier.waiter)], timeout=timeout) is not None


async def wait_async(client: Any, barrier: Barrier, timeout: float = WAIT_SECONDS) -> bool:
    return await client.blpop([keys.barrier(barrier.waiter)], timeout=timeout) is not None
