"""Workers as their heartbeats describe them; draining one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ALLOW, ActorDep
from api.deps import ServicesDep
from protocol.workers import live_workers, request_drain
from runyard.errors import NotFound
from store import audit
from store.clusters import worker_public
from store.db import session_scope
from store.models import WorkerPublic, WorkersPublic

router = APIRouter(prefix="/workers", tags=["workers"])


@router.get("", operation_id="list_workers", dependencies=[ALLOW.read])
def list_workers(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> WorkersPublic:
    data = [worker_public(w) for w in live_workers(services.redis)]
    return WorkersPublic(data=data[offset : offset + limit], count=len(data))


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
