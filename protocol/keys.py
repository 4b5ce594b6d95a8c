"""Every Redis key, stream and Celery queue name Runyard uses, named in one place."""

from __future__ import annotations

PREFIX = "runyard"

# Before ingest was sharded, the one stream every producer appended to. Nothing appends
# to it any more; the leader applies what an upgrade left in it, first (scheduler.service).
INGEST_STREAM = f"{PREFIX}:ingest"
# The consumer group every ingest stream (shards, wakes, the old stream) is read through.
INGEST_GROUP = "ingest"
# Wake entries (a submit, a worker coming up, a run ending): read by the leader alone, in
# the same blocking read as its shards, so admission acts on them at once.
INGEST_WAKE_STREAM = f"{PREFIX}:ingest:wake"
# How many ingest shards there are unless ``RUNYARD_INGEST_SHARDS`` says otherwise.
DEFAULT_INGEST_SHARDS = 8
# The shard count this Runyard's ingest was set up with, recorded by the first process to
# start (``protocol.streams.agree_on_shards``); no expiry.
INGEST_SHARD_COUNT = f"{PREFIX}:ingest:shards"


def ingest_shard(shard: int) -> str:
    """One shard of the ingest: every entry about a run goes to the shard its id hashes to
    (``protocol.streams.shard_of``), so one consumer applies a run's entries in order."""
    return f"{PREFIX}:ingest:{shard}"


def ingest_shard_lease(shard: int) -> str:
    """The lease a scheduler holds while it alone consumes the shard ("<token> <name>")."""
    return f"{PREFIX}:ingest:{shard}:lease"


def ingest_shard_fence(shard: int) -> str:
    """Counter the shard's lease tokens are drawn from (each take of the shard a higher one)."""
    return f"{PREFIX}:ingest:{shard}:fence"


def ingest_streams(shards: int) -> list[str]:
    """Every stream an ingest consumer group reads: the shards, the wakes, the old stream."""
    return [*(ingest_shard(s) for s in range(shards)), INGEST_WAKE_STREAM, INGEST_STREAM]


# Sorted set of live schedulers by name, each scored with the Redis time (ms) its
# announcement runs out: how many share the ingest shards.
SCHEDULER_MEMBERS = f"{PREFIX}:scheduler:members"

# Set of worker ids that have announced themselves; each has a key of its own (``worker``)
# holding its heartbeat as a JSON string, which expires unless refreshed.
WORKERS = f"{PREFIX}:workers"

# Refreshed by the scheduler on every sweep; /readyz checks it.
SCHEDULER_ALIVE = f"{PREFIX}:scheduler:alive"

# Scheduler leadership (scheduler/leadership.py). The lease: "<token> <scheduler name>",
# set NX with a TTL by the one scheduler that admits and runs the watchdog, renewed by it
# alone. Its token comes from INCR of the fence counter on each acquisition, so a later
# leader always holds a higher token (the database fence refuses lower ones).
SCHEDULER_LEADER = f"{PREFIX}:scheduler:leader"
SCHEDULER_FENCE = f"{PREFIX}:scheduler:fence"


def scheduler_alive(host: str) -> str:
    """Refreshed by every scheduler, leader or not, under its host name (a pod's, a
    container's): what its liveness probe checks."""
    return f"{PREFIX}:scheduler:alive:{host}"


# A run's claim and cancel marks outlive the broker's visibility timeout (30 days), so a
# message redelivered that late still finds the run claimed and cannot start it again.
RUN_KEY_TTL = 31 * 24 * 3600
# How long a finished run's live stream stays for late followers.
LIVE_AFTER_END_TTL = 3600
# Capped length of a run's live stream (what log followers and SSE tail).
LIVE_STREAM_MAXLEN = 2_000


# How long the ingest's answer to a barrier waits for a waiter that has gone away.
BARRIER_TTL = 300


def barrier(waiter: str) -> str:
    """A list the ingest pushes to once every entry before a ``Barrier`` is committed: what a
    synchronous write (``complete()``, ``tag()``, ``flush()``...) blocks on."""
    return f"{PREFIX}:barrier:{waiter}"


def barrier_parts(waiter: str) -> str:
    """How many shards a barrier was sent to (each holds a copy behind the entries before
    it); the waiter is released once every one of them has passed its copy."""
    return f"{PREFIX}:barrier:{waiter}:parts"


def barrier_passed(waiter: str) -> str:
    """Set of the shards (stream names) whose copy of the barrier is committed."""
    return f"{PREFIX}:barrier:{waiter}:passed"


def live_streams(token: str) -> str:
    """How many live streams (SSE, followed logs) are open with one token right now."""
    return f"{PREFIX}:live-streams:{token}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def worker_drain(worker_id: str) -> str:
    """Set by an operator: the worker finishes its runs and takes no new ones."""
    return f"{PREFIX}:worker:{worker_id}:drain"


def run_live(run_id: str) -> str:
    """Capped stream of a run's log chunks and state changes, for live followers."""
    return f"{PREFIX}:run:{run_id}:live"


def run_claim(run_id: str, attempt: int = 0) -> str:
    """Set (NX) by the worker that starts an attempt of the run: a redelivered message
    cannot start it twice, and a message of an earlier attempt cannot start a later one."""
    return f"{PREFIX}:run:{run_id}:claim:{attempt}"


def run_cancel(run_id: str) -> str:
    """Set by the API on cancel; a worker refuses to start, or stops, a run that has it."""
    return f"{PREFIX}:run:{run_id}:cancel"


def run_preempt(run_id: str, attempt: int) -> str:
    """Set by the leading scheduler when it preempts the attempt (``scheduler.policy``): its
    worker stops it with the cluster's grace period, keeps its outputs and checkpoints and
    reports it preempted, and the run waits again for its next attempt."""
    return f"{PREFIX}:run:{run_id}:preempt:{attempt}"


def run_superseded(run_id: str, attempt: int) -> str:
    """Set when an attempt was given up (its node went silent and the run was requeued):
    should that node come back, its worker stops the attempt."""
    return f"{PREFIX}:run:{run_id}:superseded:{attempt}"


def run_alive(run_id: str) -> str:
    """Refreshed by the worker holding the run; its absence is what the watchdog looks for."""
    return f"{PREFIX}:run:{run_id}:alive"


def cluster_queue(cluster: str) -> str:
    """The Celery queue a cluster's workers consume."""
    return f"cluster.{cluster}"


def environment_build(scope: str, build_hash: str) -> str:
    """The lock one build of an environment holds: ``scope`` is what shares built images
    (a Docker engine's id, or the cluster's registry), so two runs there build it once."""
    return f"{PREFIX}:envbuild:{scope}:{build_hash}"


def cluster_reasons(cluster: str) -> str:
    """Hash of why each waiting run of a cluster with team quotas waits (run id -> reason),
    as the leader's last admission decided (``protocol.pending_reasons``)."""
    return f"{PREFIX}:cluster:{cluster}:reasons"
