"""A run's files: the snapshot it was submitted with, and the files it stores (its log
listed among them, as Azure lists it)."""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from sqlmodel import Session

from api.auth import ALLOW
from api.deps import Services, ServicesDep, SessionDep
from api.storage import safe_name
from protocol.budgets import RunBudgets, over
from runyard.core.run import STD_LOG
from runyard.errors import InvalidInput, RequestTooLarge, SnapshotTooLarge
from store import run_output
from store import runs as run_service
from store.db import as_utc
from store.models import Cluster, RunFile, RunFilePublic, RunFilesPublic

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get(
    "/{run_id}/snapshot",
    operation_id="get_run_snapshot",
    response_class=FileResponse,
    dependencies=[ALLOW.run_snapshot],
)
def get_run_snapshot(run_id: str, session: SessionDep, services: ServicesDep) -> FileResponse:
    run = run_service.get_run(session, run_id)
    if not run.snapshot_digest:
        raise InvalidInput(f"run {run_id} has no snapshot")
    path = services.snapshots.require(run.snapshot_digest)
    return FileResponse(path, media_type="application/gzip", filename=f"{run_id}-snapshot.tar.gz")


@router.get("/{run_id}/files", operation_id="list_run_files", dependencies=[ALLOW.read_run])
def list_run_files(
    run_id: str,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RunFilesPublic:
    run = run_service.get_run(session, run_id)
    files = run_output.run_files(session, run_id)
    data = [RunFilePublic(name=f.name, size=f.size, created_at=as_utc(f.created_at)) for f in files]
    if run_output.has_log_file(run):  # its log, listed as Azure lists it
        size = run_output.log_bytes(session, run_id)
        data.append(RunFilePublic(name=STD_LOG, size=size, created_at=as_utc(run.created_at)))
        data.sort(key=lambda f: f.name)
    return RunFilesPublic(data=data[offset : offset + limit], count=len(data))


@router.put(
    "/{run_id}/files/{name:path}",
    operation_id="upload_run_file",
    dependencies=[ALLOW.write_run],
)
async def upload_run_file(
    run_id: str, name: str, request: Request, services: ServicesDep
) -> RunFilePublic:
    """Store a file of the run (raw request body), replacing one of the same name."""
    name = safe_name(name)
    if name == STD_LOG:
        raise InvalidInput(
            f"{STD_LOG} is the run's own log, kept by Runyard; upload under another name",
            field="name",
        )
    budget, left = await asyncio.to_thread(_file_allowance, services, run_id, name)
    limit = min(services.settings.max_file_bytes, left)
    try:
        size = await services.files.put(run_id, name, request.stream(), limit)
    except SnapshotTooLarge:
        if limit < services.settings.max_file_bytes:
            raise RequestTooLarge(f"{name!r} not stored: run {run_id} would be {budget}") from None
        raise
    return await asyncio.to_thread(_record_file, services, run_id, name, size)


def _file_allowance(services: Services, run_id: str, name: str) -> tuple[str, int]:
    """How many more bytes the run's files may take (its budget: protocol.budgets), with
    the reason to give past it; a run at its file count is refused here."""
    with Session(services.engine) as session:
        run = run_service.get_run(session, run_id)
        cluster = session.get(Cluster, run.cluster) if run.cluster else None
        budgets = RunBudgets.of(cluster.budgets if cluster else None)
        count, used = run_output.file_usage(session, run_id, besides=name)
    if count >= budgets.files:
        raise RequestTooLarge(f"{name!r} not stored: run {run_id} is {over(budgets, 'files')}")
    return over(budgets, "file_bytes"), max(budgets.file_bytes - used, 0)


def _record_file(services: Services, run_id: str, name: str, size: int) -> RunFilePublic:
    with Session(services.engine, expire_on_commit=False) as session:
        record = session.get(RunFile, (run_id, name)) or RunFile(run_id=run_id, name=name, size=0)
        record.size = size
        session.add(record)
        session.commit()
        return RunFilePublic(name=name, size=size, created_at=as_utc(record.created_at))


@router.get(
    "/{run_id}/files/{name:path}",
    operation_id="download_run_file",
    response_model=None,
    dependencies=[ALLOW.read_run],
)
def download_run_file(
    run_id: str, name: str, session: SessionDep, services: ServicesDep
) -> FileResponse | StreamingResponse:
    run = run_service.get_run(session, run_id)
    if name == STD_LOG and run_output.has_log_file(run):
        return StreamingResponse(
            run_output.log_text(services.engine, run_id),
            media_type="text/plain; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="std_log.txt"',
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
            },
        )
    path = services.files.open(run_id, name)
    # What a run uploaded is untrusted: never rendered as a page on this origin (it would
    # run with a signed-in person's session). Raster images keep their type for <img>.
    media_type = INLINE_IMAGES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(
        path,
        media_type=media_type,
        filename=PurePosixPath(name).name,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


INLINE_IMAGES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
