"""A run's log and live events: the log read whole or followed, and Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, StreamingResponse
from sse_starlette.sse import EventSourceResponse

from api.auth import ALLOW, ActorDep
from api.deps import Services, ServicesDep
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

router = APIRouter(prefix="/runs", tags=["runs"])


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
