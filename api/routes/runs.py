"""Runs: submit (multipart: JSON spec + snapshot), read, list, reorder, cancel and fail.

A run's log and events are in ``run_logs``, its files in ``run_files``, interactive runs
and run tokens in ``interactive``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Annotated, TypeVar

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from sqlmodel import Session

from api.auth import ALLOW, ActorDep
from api.deps import Services, ServicesDep, SessionDep
from api.errors import validate_json
from api.paging import DEFAULT_PAGE, Cursor, KeyFilter, Limit, Offset, key_filter
from protocol import barriers
from protocol.roles import Role
from protocol.streams import send_to_ingest
from runyard import snapshot
from runyard.errors import (
    Forbidden,
    InvalidInput,
    ServiceUnavailable,
    SnapshotTooLarge,
)
from runyard.status import RunStatus
from store import audit, run_listings, teams
from store import runs as run_service
from store.announcements import Announcements, wake
from store.models import (
    BulkCancel,
    CancelResults,
    FailRequest,
    RunArrayPublic,
    RunArraySpec,
    RunChange,
    RunDetails,
    RunSpec,
    RunsPublic,
)
from store.run_tree import in_tree
from store.tokens import Actor

router = APIRouter(prefix="/runs", tags=["runs"])

# The archive a submit may send (multipart part "snapshot"); none when the spec names one.
SnapshotUpload = Annotated[UploadFile | None, File(alias="snapshot")]


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
    snapshot_file: SnapshotUpload = None,
) -> RunDetails:
    """Queue a run. Send the snapshot archive, or name one already stored by its digest."""
    run_spec = validate_json(RunSpec, spec, field="spec")
    if actor.role == Role.RUN:
        _check_child_of_own_tree(session, actor, run_spec)
    run_spec = teams.charge(session, actor, run_spec)
    charge = partial(services.submit_limiter.hit, actor)
    run_spec, digest = _accept_submission(session, services, run_spec, snapshot_file, charge)
    run = run_service.submit(session, run_spec, digest, submitted_by=actor.name)
    audit.record(session, actor, "run.submit", run.id, cluster=run_spec.cluster, team=run.team)
    session.commit()
    wake(services.redis, run_spec.cluster)
    return run_listings.describe(session, services.redis, run)


@router.post(
    "/array",
    status_code=status.HTTP_201_CREATED,
    operation_id="submit_run_array",
    dependencies=[ALLOW.submit_run],
)
def submit_run_array(
    session: SessionDep,
    services: ServicesDep,
    actor: ActorDep,
    spec: Annotated[str, Form(description="RunArraySpec as JSON")],
    snapshot_file: SnapshotUpload = None,
) -> RunArrayPublic:
    """Queue a job array: one run per entry of ``arguments_list``, with one snapshot and one
    environment, in one transaction (a bad entry refuses them all). Counts as one
    submission, and its runs against the token's array run limit."""
    array_spec = validate_json(RunArraySpec, spec, field="spec")
    if actor.role == Role.RUN:
        raise Forbidden(
            f"{actor.role} token {actor.name!r} submits only child runs (run.submit_child), "
            "not job arrays"
        )
    array_spec = teams.charge(session, actor, array_spec)
    count = len(array_spec.arguments_list)
    charge = partial(services.submit_limiter.hit_array, actor, count)
    array_spec, digest = _accept_submission(session, services, array_spec, snapshot_file, charge)
    array_id, cluster, ids = run_service.submit_array(
        session, array_spec, digest, submitted_by=actor.name
    )
    audit.record(
        session,
        actor,
        "run.submit_array",
        array_id,
        cluster=cluster,
        count=count,
        team=array_spec.team,
    )
    session.commit()
    wake(services.redis, cluster)
    return RunArrayPublic(
        array_id=array_id,
        experiment=array_spec.experiment,
        cluster=cluster,
        count=count,
        run_ids=ids,
    )


def _check_child_of_own_tree(session: Session, actor: Actor, spec: RunSpec) -> None:
    """A run submits only child runs of its own tree (``run.submit_child``; the tree's
    budget of child runs is checked with everything else a submit needs)."""
    parent = spec.parent_run_id
    if parent is None or actor.run_id is None or not in_tree(session, parent, actor.run_id):
        raise Forbidden(
            f"{actor.role} token {actor.name!r} submits only child runs of its own tree "
            "(run.submit_child)"
        )


Spec = TypeVar("Spec", bound=RunSpec)


def _accept_submission(
    session: Session,
    services: Services,
    spec: Spec,
    upload: UploadFile | None,
    charge: Callable[[], None],
) -> tuple[Spec, str]:
    """What a submit, single or array, does before it stores runs, in this order: the spec
    checked against the database (its cluster resolved), the snapshot's cheap refusals, the
    token's budgets charged (``charge``: a refused submit takes nothing from them), and an
    archive sent inspected and kept. Returns the checked spec and the snapshot's digest."""
    spec = run_service.check_submittable(session, spec)  # type: ignore[assignment]
    digest, archive = _read_snapshot(services, spec, upload)
    charge()
    _keep_snapshot(services, digest, archive)
    return spec, digest


def _read_snapshot(
    services: Services, spec: RunSpec, upload: UploadFile | None
) -> tuple[str, bytes | None]:
    """The snapshot's digest, and the archive when one was sent: the cheap refusals (none
    given, unknown digest, too large, digest not matching), before the token is charged."""
    limits = services.settings.snapshot_limits
    if upload is None:
        if spec.snapshot_digest is None:
            raise InvalidInput("send a snapshot archive or a snapshot_digest", field="snapshot")
        services.snapshots.require(spec.snapshot_digest)
        return spec.snapshot_digest, None
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
    return digest, archive


def _keep_snapshot(services: Services, digest: str, archive: bytes | None) -> None:
    """Store an archive sent (once its contents pass inspection), after the charge."""
    if archive is not None and not services.snapshots.exists(digest):
        snapshot.inspect_archive(archive, services.settings.snapshot_limits)
        services.snapshots.put(digest, archive)


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
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> RunsPublic:
    """A page of runs, newest first (a run's children: in the order they were made).
    ``count`` is null with tag or property filters, or a cluster and an experiment
    together, where a total would need a scan; follow ``next_cursor`` for more."""
    page = run_listings.list_runs(
        session,
        cluster=cluster,
        experiment=experiment,
        parent=parent,
        statuses=status,
        tags=key_filter("tags", tags),
        properties=key_filter("properties", properties),
        top_level=top_level,
        limit=limit,
        cursor=cursor,
        offset=offset,
        client=services.redis,  # waiting runs: their position and pending reason
    )
    return RunsPublic(data=page.data, count=page.count, next_cursor=page.next_cursor)


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
) -> RunDetails:
    if fresh:
        barrier = barriers.new()
        send_to_ingest(services.redis, [barrier])
        if not await barriers.wait_async(services.aredis, barrier):
            raise ServiceUnavailable("the service is behind on storing what runs report")
    return await asyncio.to_thread(_describe, services, run_id)


def _describe(services: Services, run_id: str) -> RunDetails:
    with Session(services.engine, expire_on_commit=False) as session:
        run = run_service.get_run(session, run_id)
        return run_listings.describe(session, services.redis, run)


@router.patch("/{run_id}", operation_id="update_run", dependencies=[ALLOW.submit])
def update_run(
    run_id: str, body: RunChange, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> RunDetails:
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
    return run_listings.describe(session, services.redis, run)


@router.post("/{run_id}/fail", operation_id="fail_run", dependencies=[ALLOW.cancel_run])
def fail_run(
    run_id: str, body: FailRequest, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> RunDetails:
    """``run.fail()``: the run ends Failed now with ``error`` as its reason; if it is on a
    worker, its process is stopped as on cancel."""
    news = Announcements()
    run = run_service.fail_with_children(session, services.redis, run_id, body.error, news)
    audit.record(session, actor, "run.fail", run_id)
    session.commit()
    news.send(services.redis)
    return run_listings.describe(session, services.redis, run)


@router.post("/{run_id}/cancel", operation_id="cancel_run", dependencies=[ALLOW.cancel_run])
def cancel_run(
    run_id: str, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> RunDetails:
    # The cancel and its audit record commit together; then followers and the scheduler hear.
    news = Announcements()
    run = run_service.cancel_with_children(session, services.redis, run_id, news)
    audit.record(session, actor, "run.cancel", run_id)
    session.commit()
    news.send(services.redis)
    return run_listings.describe(session, services.redis, run)
