"""What runs log: event batches in (interactive and fetched runs), metrics, tags out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from sqlmodel import Session

from api.auth import ALLOW
from api.deps import Services, ServicesDep, SessionDep
from api.errors import validate_json
from api.live import json_safe
from protocol import barriers
from protocol.messages import Entry, TrackingBatch
from protocol.streams import send_to_ingest
from runyard.errors import Conflict, InvalidInput, ServiceUnavailable
from runyard.tracking import events as ev
from store import run_tree
from store import runs as run_service
from store.models import (
    EventBatch,
    EventsAccepted,
    HistoryWindow,
    MetricHistoryPublic,
    MetricNamesPublic,
    RunMetricsPublic,
)
from store.models.tracking import MAX_EVENTS, MAX_SEQ
from store.tracking import collector, reads

router = APIRouter(prefix="/runs", tags=["tracking"])

KINDS = {*ev.METRIC_KINDS, ev.TAG, ev.PROPERTY, ev.CHILD, ev.STATUS, ev.NAME}


class JSONWithNaN(JSONResponse):
    """Metric values are stored as logged, NaN and infinities included (Python's json
    reads them back); the browser-facing SSE stream spells them as strings instead.
    (A JSONResponse, so the OpenAPI schema shows the route's ``response_model``.)"""

    def render(self, content: Any) -> bytes:
        if getattr(content, "finite", False):  # reads.Points says there is nothing orjson
            with contextlib.suppress(orjson.JSONEncodeError):  # would change (NaN, inf...)
                return orjson.dumps(content)  # (what it still refuses: a lone surrogate)
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


@router.post(
    "/{run_id}/events",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="log_events",
    dependencies=[ALLOW.write_run],
)
async def log_events(run_id: str, request: Request, services: ServicesDep) -> EventsAccepted:
    """Append a batch of logged events for the run and its children. Accepted means queued
    on the ingest stream (durable); it is in the database a moment later. With ``wait``
    the answer comes once it is in the database, with everything sent before it."""
    body = await request.body()  # its size is capped by api.body_limits
    with collector.held_off():  # no await inside: nothing else runs on this loop meanwhile
        plain = _plain_batch(body)
        batch = plain or validate_json(EventBatch, body)
        targets = _checked_targets(run_id, batch.events)
    await asyncio.to_thread(_check_batch, services, run_id, batch.events)
    entries: list[Entry] = []
    if plain is not None and targets == [run_id]:
        # The usual batch (every event for the run itself) goes on the stream as the body
        # that arrived: nothing is numbered or encoded again here (TrackingBatch.body). Only
        # a plainly valid one: a body the model accepted by coercing it ("first_seq": "5")
        # is built again from the model, as the ingest reads only the plain form.
        entries.append(
            TrackingBatch(run_id=run_id, origin=run_id, producer=batch.producer, events=[],
                          body=body)
        )  # fmt: skip
    elif targets:
        by_target: dict[str, list[list[Any]]] = {target: [] for target in targets}
        for offset, event in enumerate(batch.events):
            by_target[event["r"]].append([batch.first_seq + offset, event])
        entries += [
            TrackingBatch(run_id=target, origin=run_id, producer=batch.producer, events=events)
            for target, events in by_target.items()
        ]
    barrier = barriers.new() if batch.wait else None
    if barrier is not None:
        entries.append(barrier)
    if entries:
        send_to_ingest(services.redis, entries)
    if barrier is not None and not await barriers.wait_async(services.aredis, barrier):
        raise ServiceUnavailable(
            f"the events are queued but not yet stored after {barriers.WAIT_SECONDS:.0f} s "
            "(is the scheduler running?); send the batch again to wait again"
        )
    return EventsAccepted(accepted=len(batch.events), stored=barrier is not None)


PRODUCER = re.compile(EventBatch.model_fields["producer"].metadata[-1].pattern)
BATCH_KEYS = frozenset(EventBatch.model_fields)


def _plain_batch(body: bytes) -> EventBatch | None:
    """The batch read by orjson when it is plainly valid (what the SDK sends), built without
    a second walk over its events; anything else (NaN, a missing or wrong field) is left to
    the model's own validation, which refuses it with the usual reason."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= BATCH_KEYS:
        return None
    producer, first, events = data.get("producer"), data.get("first_seq"), data.get("events")
    if (
        type(producer) is not str
        or not 1 <= len(producer) <= 64
        or not PRODUCER.fullmatch(producer)
        or type(first) is not int
        or not 0 <= first <= MAX_SEQ
        or type(events) is not list
        or len(events) > MAX_EVENTS
        or type(data.get("wait", False)) is not bool
        or not all(type(event) is dict for event in events)
    ):
        return None
    return EventBatch.model_construct(**data)  # events are checked one by one next


def _checked_targets(run_id: str, events: list[dict[str, Any]]) -> list[str]:
    """The runs the events are for, in the order each first appears (a child's creation,
    in its parent's events, comes before the child's own: their entries must keep that
    order), once every event is one the SDK writes, of a kind a client may send, for
    ``run_id`` or a child of it; else the batch is refused whole."""
    targets: dict[str, None] = {}
    well_formed, is_descendant = ev.well_formed, ev.is_descendant
    for offset, event in enumerate(events):
        if not well_formed(event) or event["k"] not in KINDS:
            raise InvalidInput(f"events[{offset}] is not a Runyard event", field="events")
        target = event["r"]
        if target != run_id and not is_descendant(target, run_id):
            raise InvalidInput(
                f"events[{offset}] targets {target!r}, which is not {run_id} or its child",
                field="events",
            )
        targets[target] = None
    return list(targets)


def _check_batch(services: Services, run_id: str, events: list[dict[str, Any]]) -> None:
    """What only the database can tell: the run exists, and no property changes (Azure
    raises on that, so the batch is refused whole and the caller hears why)."""
    with Session(services.engine) as session:
        run_service.get_run(session, run_id)
        stored_of: dict[str, dict[str, str]] = {}
        for event in events:
            if event["k"] != ev.PROPERTY:
                continue
            target = event["r"]
            if target not in stored_of:
                stored_of[target] = reads.properties_of(session, target)
            stored = stored_of[target]
            for key, value in event["v"].items():
                if key in stored and stored[key] != str(value):
                    raise Conflict(
                        f"property {key!r} of run {event['r']} is already {stored[key]!r}; "
                        "properties cannot change (use a tag for a value that changes)"
                    )


@router.get(
    "/{run_id}/metrics",
    operation_id="get_metrics",
    response_model=RunMetricsPublic,
    response_class=JSONWithNaN,
    dependencies=[ALLOW.read_run],
)
def get_metrics(
    run_id: str, session: SessionDep, name: str | None = None, recursive: bool = False
) -> JSONWithNaN:
    """``{"runs": {run_id: {name: {"kind", "points": [[idx, column, value], ...]}}}}``."""
    run_service.get_run(session, run_id)
    ids = run_tree.descendants(session, run_id) if recursive else [run_id]
    return JSONWithNaN(reads.metrics_of(session, ids, name))


@router.get(
    "/{run_id}/metric-names",
    operation_id="list_metric_names",
    response_model_exclude_unset=True,  # "last" is left out where a series has none
    dependencies=[ALLOW.read_run],
)
def list_metric_names(run_id: str, session: SessionDep) -> MetricNamesPublic:
    """Each series with its kind, its length and (single-column ones) its latest value."""
    run_service.get_run(session, run_id)
    found = reads.metric_names(session, run_id)
    for series in found.data:
        if "last" in series.model_fields_set:
            series.last = json_safe(series.last)  # a browser's JSON has no NaN
    return found


@router.get(
    "/{run_id}/metrics/{name}/history",
    operation_id="get_metric_history",
    response_model=MetricHistoryPublic,
    response_class=JSONWithNaN,
    dependencies=[ALLOW.read_run],
)
def get_metric_history(
    run_id: str,
    name: str,
    session: SessionDep,
    window: Annotated[HistoryWindow, Query()],
) -> JSONWithNaN:
    """One series (a column of it, for rows and tables): whole and paged, or downsampled to
    at most ``max_points`` keeping the first, the last and every bucket's extremes."""
    run_service.get_run(session, run_id)
    return JSONWithNaN(reads.metric_history(session, run_id, name, window))


@router.get("/{run_id}/tags", operation_id="get_tags", dependencies=[ALLOW.read_run])
def get_tags(run_id: str, session: SessionDep) -> dict[str, str | None]:
    """A tag set without a value reads back as null, as Azure's does (``None``)."""
    run_service.get_run(session, run_id)
    return reads.tags_of(session, run_id)


@router.get("/{run_id}/properties", operation_id="get_properties", dependencies=[ALLOW.read_run])
def get_properties(run_id: str, session: SessionDep) -> dict[str, str]:
    run_service.get_run(session, run_id)
    return reads.properties_of(session, run_id)
