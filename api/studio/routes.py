"""The Studio's pages and assets, served by the API itself (no CDN, no separate server).

Pages are one static shell; every piece of data behind them comes from /api/v1 with the
session cookie, so the shell and its assets are public and hold nothing of anyone's.
The assets are built from pinned npm packages (api/studio/web, ``make studio``) and
shipped inside the Python package.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PAGES = (
    "/login",
    "/clusters",
    "/experiments",
    "/experiments/{name}",
    "/runs/{run_id}",
    "/compare",
    "/usage",
)

PUBLIC_PATHS = frozenset({*PAGES, "/"})


def install(app: FastAPI, frame_ancestors: str) -> None:
    policy = (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        f"object-src 'none'; base-uri 'none'; frame-ancestors {frame_ancestors}"
    )
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }

    def shell() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=headers)

    for page in PAGES:
        app.add_api_route(page, shell, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/", lambda: RedirectResponse("/clusters"), methods=["GET"], include_in_schema=False
    )
    app.mount("/studio/static", StaticFiles(directory=STATIC), name="studio-static")
