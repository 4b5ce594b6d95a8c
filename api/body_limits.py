"""Request body limits per path, enforced while the body arrives.

A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked
body is counted as it streams and cut off at the limit. Either way the client gets 413 and
the route never sees a complete body, so nothing is stored.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.settings import Settings

SUBMIT = re.compile(r"^/api/v1/runs(/array)?/?$")  # one run, or a job array
EVENTS = re.compile(r"^/api/v1/runs/[^/]+/events$")
FILES = re.compile(r"^/api/v1/runs/[^/]+/files/.+$")
# The spec field (a form field: at most 1 MiB, Starlette's part limit, which also bounds a
# job array's argument lists) and the form's boundaries.
MULTIPART_OVERHEAD = 1024 * 1024


def limit_for(settings: Settings, method: str, path: str) -> int:
    if method == "POST" and SUBMIT.match(path):
        return settings.snapshot_max_bytes + MULTIPART_OVERHEAD
    if method == "POST" and EVENTS.match(path):
        return settings.max_event_batch_bytes
    if method == "PUT" and FILES.match(path):
        return settings.max_file_bytes
    return settings.max_request_bytes


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(self.settings, scope["method"], scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    # End the body here: whatever parses it fails, and send() answers 413.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                started = True
                await _refuse(send, limit)
                return
            if over:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
                await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body: dict[str, Any] = {
        "error": "RequestTooLarge",
        "detail": f"request body is over this path's limit of {limit} bytes",
        "field": None,
    }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
