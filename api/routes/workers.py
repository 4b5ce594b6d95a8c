"""Workers as their heartbeats describe them; draining one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ALLOW, ActorDep
from api.deps import ServicesDep
from api.paging import Cursor, Offset
from protocol.workers import live_workers, request_drain
from runyard.errors import NotFound
from store import audit, paging
from store.clusters import worker_public
from store.db import session_scope
from store.models import WorkerPublic, WorkersPublic

router = APIRouter(prefix="/workers", tags=["workers"])


@router.get("", operation_id="list_workers", dependencies=[ALLOW.read])
def list_workers(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> WorkersPublic:
    """A page of live workers by id (their heartbeats, from Redis: as many as are alive,
    not a history)."""
    every = sorted(live_workers(services.redis), key=lambda w: w.id)
    workers = every
    if cursor is not None:
        _, (after,) = paging.decode("workers", cursor, [[paging.Key(None, str)]])
        workers = [w for w in workers if w.id > after]
    else:
        workers = workers[offset:]
    page, more = workers[:limit], len(workers) > limit
    next_cursor = paging.encode("workers", 0, [page[-1].id]) if more else None
    return WorkersPublic(
        data=[worker_public(w) for w in page],
        count=len(every),
        next_cursor=next_cursor,
    )


@router.post("/{worker_id}/drain", operation_id="drain_worker", dependencies=[ALLOW.admin])
def drain_worker(worker_id: str, services: ServicesDep, actor: ActorDep) -> WorkerPublic:
    """The worker finishes the runs it holds and takes no new ones (it stays up)."""
    found = next((w for w in live_workers(services.redis) if w.id == worker_id), None)
    if found is None:
        raise NotFound(f"no live worker {worker_id!r}")
    request_drain(services.redis, worker_id)
    with session_scope(services.engine) as session:
        audit.record(session, actor, "worker.drain", worker_id)
    public = worker_public(found)
    public.draining = True
    return public
