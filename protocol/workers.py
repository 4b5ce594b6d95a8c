"""Which workers are alive, what they serve and how busy they are, as told by heartbeats.

Workers write; the scheduler and the API read. Each worker is one Redis string key holding
its ``WorkerInfo`` as JSON, which expires unless refreshed, so a worker that dies simply
disappears.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

import redis

from protocol import keys
from protocol.replies import as_text


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    hostname: str
    clusters: list[str]
    slots: int
    runs: list[str] = field(default_factory=list)
    last_heartbeat: float = field(default_factory=time.time)
    draining: bool = False  # finishing its runs, taking no new ones
    gpus: int = 0  # its node's GPUs, split evenly between its slots

    @property
    def busy(self) -> int:
        return len(self.runs)


# One heartbeat, atomically: the drain request is read before the worker's info is written,
# and decides which of the two versions is written, so a worker asked to drain is never
# announced with free slots after the request exists (the scheduler could admit onto it).
_HEARTBEAT = """
local drain = redis.call('EXISTS', KEYS[3])
local info = ARGV[1]
if drain == 1 then info = ARGV[2] end
redis.call('SET', KEYS[1], info, 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[4], 'PX', ARGV[3]) end
return drain
"""


def publish_heartbeat(client: redis.Redis, info: WorkerInfo, ttl: float) -> bool:
    """Announce the worker and keep each of its runs' alive keys fresh, in one round trip;
    returns whether an operator asked the worker to drain. Where one has, the worker is
    announced draining in that same trip, whatever ``info`` says.

    The keys expire by Redis' clock: whether a run is alive never compares two hosts' clocks.
    """
    ttl_ms = max(int(ttl * 1000), 1)
    as_is = json.dumps(asdict(info))
    draining = as_is if info.draining else json.dumps(asdict(replace(info, draining=True)))
    run_keys = [keys.run_alive(run_id) for run_id in info.runs]
    script = client.register_script(_HEARTBEAT)
    found = script(
        keys=[keys.worker(info.id), keys.WORKERS, keys.worker_drain(info.id), *run_keys],
        args=[as_is, draining, ttl_ms, info.id],
    )
    return bool(found)


def server_time(client: redis.Redis) -> datetime:
    """Now, by Redis' clock: the clock alive keys expire by. Schedulers that compare times
    of liveness (how long a run has been silent) read it, so a scheduler host whose clock is
    off, or a second scheduler on another host, judges silence the same way."""
    seconds, micros = client.time()
    return datetime.fromtimestamp(seconds + micros / 1_000_000, tz=UTC)


def remove_worker(client: redis.Redis, worker_id: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.worker(worker_id))
    pipe.srem(keys.WORKERS, worker_id)
    pipe.execute()


def live_workers(client: redis.Redis) -> list[WorkerInfo]:
    ids = sorted(as_text(i) for i in client.smembers(keys.WORKERS))
    if not ids:
        return []
    raw = client.mget([keys.worker(i) for i in ids])
    found: list[WorkerInfo] = []
    gone: list[str] = []
    for worker_id, value in zip(ids, raw, strict=True):
        if value is None:
            gone.append(worker_id)
        else:
            data = json.loads(value)
            known = {k: data[k] for k in WorkerInfo.__dataclass_fields__ if k in data}
            found.append(WorkerInfo(**known))
    if gone:
        client.srem(keys.WORKERS, *gone)
    return found


def workers_serving(
    workers: list[WorkerInfo], cluster: str, *, draining: bool = False
) -> list[WorkerInfo]:
    """Workers of a cluster; a draining one counts only when asked (it offers no slots)."""
    return [w for w in workers if cluster in w.clusters and (draining or not w.draining)]


def request_drain(client: redis.Redis, worker_id: str) -> None:
    client.set(keys.worker_drain(worker_id), "1", ex=keys.RUN_KEY_TTL)


def drain_requested(client: redis.Redis, worker_id: str) -> bool:
    return bool(client.exists(keys.worker_drain(worker_id)))
