"""What runs log: event batches in (interactive and fetched runs), metrics, tags out."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session, col, select

from api.auth import ALLOW
from api.deps import ServicesDep, SessionDep
from api.live import json_safe
from runyard.errors import InvalidInput, NotFound
from runyard.tracking import events as ev
from scheduler import runs as run_service
from scheduler import tracking
from scheduler.messages import TrackingBatch
from scheduler.models import Metric, RunProperty, RunTag
from scheduler.streams import send_to_ingest

router = APIRouter(prefix="/runs", tags=["tracking"])

MAX_EVENTS = 10_000
KINDS = {*ev.METRIC_KINDS, ev.TAG, ev.PROPERTY, ev.CHILD, ev.STATUS}


class EventBatch(BaseModel):
    """What a client (``start_logging``, or a fetched ``Run``) sends: events it numbered."""

    model_config = ConfigDict(extra="forbid")

    producer: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    first_seq: int = Field(ge=0)
    events: list[dict[str, Any]] = Field(max_length=MAX_EVENTS)


class JSONWithNaN(Response):
    """Metric values are stored as logged, NaN and infinities included (Python's json
    reads them back); the browser-facing SSE stream spells them as strings instead."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


@router.post(
    "/{run_id}/events",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="log_events",
    dependencies=[ALLOW.write_run],
)
async def log_events(run_id: str, request: Request, services: ServicesDep) -> dict[str, int]:
    """Append a batch of logged events for the run and its children. Accepted means queued
    on the ingest stream (durable); it is in the database a moment later."""
    body = await request.body()  # its size is capped by api.body_limits
    try:
        batch = EventBatch.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from exc
    with Session(services.engine) as session:
        run_service.get_run(session, run_id)
    by_target: dict[str, list[list[Any]]] = {}
    for offset, event in enumerate(batch.events):
        target = event.get("r")
        if not ev.well_formed(event) or event["k"] not in KINDS:
            raise InvalidInput(f"events[{offset}] is not a Runyard event", field="events")
        if not ev.is_descendant(target, run_id):
            raise InvalidInput(
                f"events[{offset}] targets {target!r}, which is not {run_id} or its child",
                field="events",
            )
        by_target.setdefault(target, []).append([batch.first_seq + offset, event])
    entries = [
        TrackingBatch(run_id=target, origin=run_id, producer=batch.producer, events=events)
        for target, events in by_target.items()
    ]
    if entries:
        send_to_ingest(services.redis, list(entries))
    return {"accepted": len(batch.events)}


@router.get(
    "/{run_id}/metrics",
    operation_id="get_metrics",
    response_class=JSONWithNaN,
    dependencies=[ALLOW.read_run],
)
def get_metrics(
    run_id: str, session: SessionDep, name: str | None = None, recursive: bool = False
) -> JSONWithNaN:
    """``{"runs": {run_id: {name: {"kind", "points": [[idx, column, value], ...]}}}}``."""
    run_service.get_run(session, run_id)
    ids = tracking.descendants(session, run_id) if recursive else [run_id]
    return JSONWithNaN({"runs": tracking.metrics_of(session, ids, name)})


@router.get(
    "/{run_id}/metric-names", operation_id="list_metric_names", dependencies=[ALLOW.read_run]
)
def list_metric_names(run_id: str, session: SessionDep) -> dict[str, Any]:
    run_service.get_run(session, run_id)
    """Each series with its kind, its length and (single-column ones) its latest value."""
    metrics = list(
        session.exec(select(Metric).where(Metric.run_id == run_id).order_by(col(Metric.name)))
    )
    single = [m.name for m in metrics if m.kind in ("scalar", "list")]
    latest = tracking.latest_values(session, [run_id], single).get(run_id, {})
    data = []
    for m in metrics:
        entry: dict[str, Any] = {"name": m.name, "kind": m.kind, "count": m.count}
        if m.name in latest:
            entry["last"] = json_safe(latest[m.name])
        data.append(entry)
    return {"data": data, "count": len(data)}


@router.get(
    "/{run_id}/metrics/{name}/history",
    operation_id="get_metric_history",
    response_class=JSONWithNaN,
    dependencies=[ALLOW.read_run],
)
def get_metric_history(
    run_id: str,
    name: str,
    session: SessionDep,
    column: str = "",
    max_points: Annotated[int | None, Query(ge=4, le=100_000)] = None,
    start: Annotated[int | None, Query(ge=0)] = None,
    end: Annotated[int | None, Query(ge=0)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> JSONWithNaN:
    """One series (a column of it, for rows and tables): whole and paged, or downsampled to
    at most ``max_points`` keeping the first, the last and every bucket's extremes."""
    run_service.get_run(session, run_id)
    metric = session.get(Metric, (run_id, name))
    if metric is None:
        raise NotFound(f"run {run_id} has no metric {name!r}")
    found = tracking.history(
        session,
        run_id,
        name,
        column,
        max_points=max_points,
        start=start,
        end=end,
        offset=offset,
        limit=limit,
    )
    return JSONWithNaN(
        {
            "name": name,
            "kind": metric.kind,
            "column": column,
            "count": found.count,
            "downsampled": found.downsampled,
            "points": found.points,
        }
    )


@router.get("/{run_id}/tags", operation_id="get_tags", dependencies=[ALLOW.read_run])
def get_tags(run_id: str, session: SessionDep) -> dict[str, str]:
    run_service.get_run(session, run_id)
    query = select(RunTag.key, RunTag.value).where(RunTag.run_id == run_id)
    return dict(session.exec(query).all())


@router.get("/{run_id}/properties", operation_id="get_properties", dependencies=[ALLOW.read_run])
def get_properties(run_id: str, session: SessionDep) -> dict[str, str]:
    run_service.get_run(session, run_id)
    query = select(RunProperty.key, RunProperty.value).where(RunProperty.run_id == run_id)
    return dict(session.exec(query).all())
