"""The atomic Redis handshakes between cancel and start.

A run may be cancelled at the very instant a worker picks it up. Both sides go through one
Lua script each, so exactly one of them wins: either the worker claims the run (and the
cancel becomes a stop request it will honour), or the cancel mark lands first (and the
worker refuses to start the run).
"""

from __future__ import annotations

import redis

from protocol import keys

_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""

_MARK_CANCELED = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return redis.call('EXISTS', KEYS[1])
"""


class ClaimResult:
    CLAIMED = 1
    TAKEN = 0  # another worker (or an earlier delivery) has it
    CANCELED = -1


def claim_run(client: redis.Redis, run_id: str, worker_id: str, attempt: int = 0) -> int:
    claim, cancel = keys.run_claim(run_id, attempt), keys.run_cancel(run_id)
    return int(client.eval(_CLAIM, 2, claim, cancel, worker_id, keys.RUN_KEY_TTL))


def mark_canceled(client: redis.Redis, run_id: str, attempt: int = 0) -> bool:
    """Set the cancel mark; returns True when a worker had already claimed the attempt."""
    claim, cancel = keys.run_claim(run_id, attempt), keys.run_cancel(run_id)
    return bool(client.eval(_MARK_CANCELED, 2, claim, cancel, keys.RUN_KEY_TTL))


def mark_canceled_many(client: redis.Redis, runs: list[tuple[str, int]]) -> list[bool]:
    """``mark_canceled`` for many (run id, attempt) pairs in one round trip: the same
    script for each, so each mark is as atomic against its run's claim as one alone."""
    if not runs:
        return []
    pipe = client.pipeline(transaction=False)
    for run_id, attempt in runs:
        claim, cancel = keys.run_claim(run_id, attempt), keys.run_cancel(run_id)
        pipe.eval(_MARK_CANCELED, 2, claim, cancel, keys.RUN_KEY_TTL)
    return [bool(claimed) for claimed in pipe.execute()]


def is_cancel_requested(client: redis.Redis, run_id: str, attempt: int = 0) -> bool:
    """Cancelled, or (for ``attempt``) superseded by a later attempt of the run."""
    return bool(client.exists(keys.run_cancel(run_id), keys.run_superseded(run_id, attempt)))


def supersede(client: redis.Redis, run_id: str, attempt: int) -> None:
    client.set(keys.run_superseded(run_id, attempt), "1", ex=keys.RUN_KEY_TTL)


def is_claimed(client: redis.Redis, run_id: str, attempt: int = 0) -> bool:
    return bool(client.exists(keys.run_claim(run_id, attempt)))


def request_preemption(client: redis.Redis, run_id: str, attempt: int, reason: str = "") -> None:
    """Ask the worker holding the attempt to stop it as preempted (``keys.run_preempt``).
    The mark holds ``reason``: the worker has no database, and says why in the run's log."""
    client.set(keys.run_preempt(run_id, attempt), reason, ex=keys.RUN_KEY_TTL)


def is_preemption_requested(client: redis.Redis, run_id: str, attempt: int) -> bool:
    return bool(client.exists(keys.run_preempt(run_id, attempt)))


def preemption_reason(client: redis.Redis, run_id: str, attempt: int) -> str | None:
    """Why the attempt is preempted ("" when the scheduler gave no reason); None: it is not."""
    value = client.get(keys.run_preempt(run_id, attempt))
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
