"""Snapshots by digest: clients ask whether one is stored; workers download them."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from api.auth import ALLOW
from api.deps import ServicesDep

router = APIRouter(prefix="/snapshots", tags=["snapshots"])


@router.head("/{digest}", operation_id="has_snapshot", dependencies=[ALLOW.submit])
def has_snapshot(digest: str, services: ServicesDep) -> Response:
    services.snapshots.require(digest)
    return Response(status_code=200)


@router.get(
    "/{digest}",
    operation_id="get_snapshot",
    response_class=FileResponse,
    dependencies=[ALLOW.snapshot],
)
def get_snapshot(digest: str, services: ServicesDep) -> FileResponse:
    return FileResponse(services.snapshots.require(digest), media_type="application/gzip")
