"""Workers as their heartbeats describe them."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import SQLModel

from api.deps import ServicesDep
from scheduler.clusters import worker_public
from scheduler.models import WorkerPublic
from scheduler.workers import live_workers

router = APIRouter(prefix="/workers", tags=["workers"])


class WorkersPublic(SQLModel):
    data: list[WorkerPublic]
    count: int


@router.get("", operation_id="list_workers")
def list_workers(services: ServicesDep) -> WorkersPublic:
    data = [worker_public(w) for w in live_workers(services.redis)]
    return WorkersPublic(data=data, count=len(data))
