"""Runs: submit (multipart: JSON spec + snapshot), read, list, cancel, logs, files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import ConfigDict, ValidationError, field_validator
from sqlmodel import Field, Session, SQLModel
from sse_starlette.sse import EventSourceResponse

from api.auth import ALLOW, ActorDep
from api.deps import Services, ServicesDep, SessionDep
from api.errors import invalid_input
from api.live import (
    LiveEvent,
    current_status,
    holding,
    names_only,
    run_events,
    sse_payload,
    stored_logs,
    stream_slot,
)
from api.storage import safe_name
from protocol import barriers
from protocol.budgets import RunBudgets, over
from protocol.streams import send_to_ingest
from runyard import snapshot
from runyard.core.run import STD_LOG
from runyard.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    RequestTooLarge,
    ServiceUnavailable,
    SnapshotTooLarge,
)
from runyard.status import RunStatus
from store import audit, tokens
from store import runs as run_service
from store.announcements import Announcements, wake
from store.db import as_utc
from store.models import (
    BulkCancel,
    CancelResults,
    Cluster,
    RunFile,
    RunFilePublic,
    RunFilesPublic,
    RunPublic,
    RunSpec,
    RunsPublic,
    check_experiment_name,
)
from store.tokens import Actor
from store.tracking import in_tree

router = APIRouter(prefix="/runs", tags=["runs"])

MAX_PAGE = 500


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="submit_run",
    dependencies=[ALLOW.submit_run],
)
def submit_run(
    session: SessionDep,
    services: ServicesDep,
    actor: ActorDep,
    spec: Annotated[str, Form(description="RunSpec as JSON")],
    snapshot_file: Annotated[UploadFile | None, File(alias="snapshot")] = None,
) -> RunPublic:
    """Queue a run. Send the snapshot archive, or name one already stored by its digest."""
    try:
        run_spec = RunSpec.model_validate_json(spec)
    except ValidationError as exc:
        raise invalid_input(exc.errors(), prefix="spec") from exc
    if actor.role == "run":
        _check_child_of_own_tree(session, actor, run_spec)
    run_spec = run_service.check_submittable(session, run_spec)  # before anything is stored
    services.submit_limiter.hit(actor)
    digest = _store_snapshot(services, run_spec, snapshot_file)
    run = run_service.submit(session, run_spec, digest, submitted_by=actor.name)
    audit.record(session, actor, "run.submit", run.id, cluster=run_spec.cluster)
    session.commit()
    wake(services.redis, run_spec.cluster)
    return run_service.describe(session, services.redis, run)


def _check_child_of_own_tree(session: Session, actor: Actor, spec: RunSpec) -> None:
    """A run submits only child runs of its own tree (``run.submit_child``; the tree's
    budget of child runs is checked with everything else a submit needs)."""
    parent = spec.parent_run_id
    if parent is None or actor.run_id is None or not in_tree(session, parent, actor.run_id):
        raise Forbidden(
            f"{actor.role} token {actor.name!r} submits only child runs of its own tree "
            "(run.submit_child)"
        )


def _store_snapshot(services: Services, spec: RunSpec, upload: UploadFile | None) -> str:
    limits = services.settings.snapshot_limits
    if upload is None:
        if spec.snapshot_digest is None:
            raise InvalidInput("send a snapshot archive or a snapshot_digest", field="snapshot")
        services.snapshots.require(spec.snapshot_digest)
        return spec.snapshot_digest
    if upload.size is not None and upload.size > limits.max_bytes:
        raise SnapshotTooLarge(
            f"snapshot archive is {upload.size} bytes; the limit is {limits.max_bytes}"
        )
    archive = upload.file.read(limits.max_bytes + 1)
    if len(archive) > limits.max_bytes:
        raise SnapshotTooLarge(f"snapshot archive is over the {limits.max_bytes} byte limit")
    digest = snapshot.digest_of(archive)
    if spec.snapshot_digest and spec.snapshot_digest != digest:
        raise InvalidInput("snapshot_digest does not match the archive sent", field="snapshot")
    if not services.snapshots.exists(digest):
        snapshot.inspect_archive(archive, limits)
        services.snapshots.put(digest, archive)
    return digest


class InteractiveRun(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    experiment: str
    display_name: str | None = Field(default=None, max_length=255)

    @field_validator("experiment")
    @classmethod
    def _valid_experiment(cls, value: str) -> str:
        return check_experiment_name(value)


class RunTokenRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    attempt: int = Field(ge=1)


@router.post("/{run_id}/run-token", operation_id="issue_run_token", dependencies=[ALLOW.serves_run])
def issue_run_token(
    run_id: str, body: RunTokenRequest, session: SessionDep, services: ServicesDep
) -> dict[str, str]:
    """The worker starting a run asks for the run's own token here, so run tokens never
    travel through the broker (which every worker of every cluster can read)."""
    run = run_service.get_run(session, run_id)
    if run.attempt != body.attempt or run.dispatched_at is None or run.status.is_terminal:
        raise Conflict(f"run {run_id} is not on attempt {body.attempt} with a worker")
    return {"token": tokens.mint_run_token(services.settings.signing_key, run.id, run.attempt)}


class InteractiveRunPublic(RunPublic):
    run_token: str  # what the client logs with: this run and its children, while it runs


@router.post(
    "/interactive",
    status_code=status.HTTP_201_CREATED,
    operation_id="start_interactive_run",
    dependencies=[ALLOW.submit],
)
def start_interactive_run(
    body: InteractiveRun, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> InteractiveRunPublic:
    """``Experiment.start_logging()``: a Running run fed by its client, not by a worker."""
    services.submit_limiter.hit(actor)
    run = run_service.start_interactive(
        session, body.experiment, body.display_name, actor.name, actor.token_id
    )
    audit.record(session, actor, "run.start_logging", run.id)
    session.commit()
    token = tokens.mint_run_token(services.settings.signing_key, run.id, run.attempt)
    public = run_service.public(run, body.experiment)
    return InteractiveRunPublic(**public.model_dump(), run_token=token)


KeyFilter = Annotated[
    str | None,
    Query(
        description='JSON object of keys and values, e.g. {"quality": "great", "reviewed": '
        "null}: each key must be set, to the value unless it is null"
    ),
]


@router.get("", operation_id="list_runs", dependencies=[ALLOW.read])
def list_runs(
    session: SessionDep,
    services: ServicesDep,
    cluster: str | None = None,
    experiment: str | None = None,
    parent: Annotated[str | None, Query(description="Only the children of this run")] = None,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    tags: KeyFilter = None,
    properties: KeyFilter = None,
    top_level: Annotated[bool, Query(description="Only runs that are not children")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RunsPublic:
    data, total = run_service.list_runs(
        session,
        cluster=cluster,
        experiment=experiment,
        parent=parent,
        statuses=status,
        tags=_key_filter("tags", tags),
        properties=_key_filter("properties", properties),
        top_level=top_level,
        limit=limit,
        offset=offset,
        client=services.redis,  # waiting runs: their position and pending reason
    )
    return RunsPublic(data=data, count=total)


def _key_filter(name: str, raw: str | None) -> dict[str, str | None] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
    ):
        raise InvalidInput(
            f"{name} must be a JSON object of string keys and string (or null) values",
            field=name,
        )
    return value


@router.post("/cancel", operation_id="cancel_runs", dependencies=[ALLOW.submit])
def cancel_runs(
    body: BulkCancel, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> CancelResults:
    """Cancel several runs; each gets its own result (a finished one reports an error)."""
    news = Announcements()
    results = run_service.cancel_many(session, services.redis, body.run_ids, news)
    audit.record_cancels(session, actor, results)
    session.commit()
    news.send(services.redis)
    return CancelResults(data=results, count=len(results))


@router.get("/{run_id}", operation_id="get_run", dependencies=[ALLOW.read_run])
async def get_run(
    run_id: str,
    services: ServicesDep,
    fresh: Annotated[
        bool,
        Query(
            description="Answer once everything reported before this request (by the run, "
            "its worker, any client) is stored: how a waiter sees a run's end complete"
        ),
    ] = False,
) -> RunPublic:
    if fresh:
        barrier = barriers.new()
        send_to_ingest(services.redis, [barrier])
        if not await barriers.wait_async(services.aredis, barrier):
            raise ServiceUnavailable("the service is behind on storing what runs report")
    return await asyncio.to_thread(_describe, services, run_id)


def _describe(services: Services, run_id: str) -> RunPublic:
    with Session(services.engine, expire_on_commit=False) as session:
        run = run_service.get_run(session, run_id)
        return run_service.describe(session, services.redis, run)


class RunChange(SQLModel):
    """What may change on a waiting run: its place in the queue."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    priority: int | None = Field(default=None, ge=-1000, le=run_service.MAX_PRIORITY)
    move_to_front: bool = False


@router.patch("/{run_id}", operation_id="update_run", dependencies=[ALLOW.submit])
def update_run(
    run_id: str, body: RunChange, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> RunPublic:
    """Change a queued run's priority, or move it ahead of everything waiting."""
    if (body.priority is None) == (not body.move_to_front):
        raise InvalidInput("give either priority or move_to_front", field="priority")
    run = run_service.get_run(session, run_id)
    priority = body.priority
    if priority is None:
        priority = run_service.front_priority(session, run.cluster or "")
    run = run_service.set_priority(session, run_id, priority)
    audit.record(session, actor, "run.priority", run_id, priority=priority)
    session.commit()
    if run.cluster:
        wake(services.redis, run.cluster)
    return run_service.describe(session, services.redis, run)


class FailRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    error: str = Field(default="failed by request", max_length=10_000)


@router.post("/{run_id}/fail", operation_id="fail_run", dependencies=[ALLOW.cancel_run])
def fail_run(
    run_id: str, body: FailRequest, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> RunPublic:
    """``run.fail()``: the run ends Failed now with ``error`` as its reason; if it is on a
    worker, its process is stopped as on cancel."""
    news = Announcements()
    run = run_service.fail_with_children(session, services.redis, run_id, body.error, news)
    audit.record(session, actor, "run.fail", run_id)
    session.commit()
    news.send(services.redis)
    return run_service.describe(session, services.redis, run)


@router.post("/{run_id}/cancel", operation_id="cancel_run", dependencies=[ALLOW.cancel_run])
def cancel_run(
    run_id: str, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> RunPublic:
    # The cancel and its audit record commit together; then followers and the scheduler hear.
    news = Announcements()
    run = run_service.cancel_with_children(session, services.redis, run_id, news)
    audit.record(session, actor, "run.cancel", run_id)
    session.commit()
    news.send(services.redis)
    return run_service.describe(session, services.redis, run)


@router.get(
    "/{run_id}/logs",
    operation_id="get_run_logs",
    response_class=PlainTextResponse,
    response_model=None,
    responses={200: {"content": {"text/plain": {}}}},
    dependencies=[ALLOW.read_run],
)
async def get_run_logs(
    run_id: str, services: ServicesDep, actor: ActorDep, follow: bool = False
) -> StreamingResponse | PlainTextResponse:
    """The run's combined stdout/stderr. With ``follow``, keeps streaming until the run ends."""
    if not follow:
        chunks = await asyncio.to_thread(stored_logs, services, run_id)
        return PlainTextResponse("".join(c.text for c in chunks))
    await asyncio.to_thread(current_status, services, run_id)  # 404 before streaming starts
    slot = await stream_slot(services, actor)
    text = holding(services, slot, _follow_text(services, run_id))
    return StreamingResponse(text, media_type="text/plain")


async def _follow_text(services: Services, run_id: str) -> AsyncIterator[str]:
    async for event in run_events(services, run_id):
        if event.kind == "log":
            yield event.data["text"]


@router.get(
    "/{run_id}/events",
    operation_id="run_events",
    response_class=EventSourceResponse,
    dependencies=[ALLOW.read_run],
)
async def get_run_events(
    run_id: str,
    services: ServicesDep,
    actor: ActorDep,
    history: bool = Query(False, description="Start with the log stored so far"),
    values: bool = Query(
        True,
        description="Send what was logged; false sends the names of the series logged to, "
        "and whether anything else (tags, properties, children, files) changed",
    ),
) -> EventSourceResponse:
    """Server-Sent Events: ``status`` changes, ``log`` chunks and ``metrics`` batches as
    they happen; the stream ends after the run's final status. A chart that reads series
    from the history endpoint asks for names only (a batch can hold a million values)."""
    await asyncio.to_thread(current_status, services, run_id)  # 404 before streaming starts

    async def events() -> AsyncIterator[dict[str, str]]:
        async for event in run_events(services, run_id, logs_from_start=history):
            if event.kind == "metrics" and not values:
                event = LiveEvent("metrics", names_only(event.data))
            yield sse_payload(event)

    slot = await stream_slot(services, actor)
    return EventSourceResponse(holding(services, slot, events()), ping=15)


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
    files = run_service.run_files(session, run_id)
    data = [RunFilePublic(name=f.name, size=f.size, created_at=as_utc(f.created_at)) for f in files]
    if run_service.has_log_file(run):  # its log, listed as Azure lists it
        size = run_service.log_bytes(session, run_id)
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
    """How many more bytes the run's files may take (its budget: scheduler.budgets), with
    the reason to give past it; a run at its file count is refused here."""
    with Session(services.engine) as session:
        run = run_service.get_run(session, run_id)
        cluster = session.get(Cluster, run.cluster) if run.cluster else None
        budgets = RunBudgets.of(cluster.budgets if cluster else None)
        count, used = run_service.file_usage(session, run_id, besides=name)
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
    if name == STD_LOG and run_service.has_log_file(run):
        return StreamingResponse(
            run_service.log_text(services.engine, run_id),
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
