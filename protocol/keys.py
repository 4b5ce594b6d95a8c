"""Every Redis key, stream and Celery queue name Runyard uses, named in one place."""

from __future__ import annotations

PREFIX = "runyard"

# Stream every producer (workers, API) appends to; the scheduler's ingest group reads it.
INGEST_STREAM = f"{PREFIX}:ingest"
INGEST_GROUP = "ingest"

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
