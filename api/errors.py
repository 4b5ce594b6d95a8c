"""One place that turns errors into HTTP responses: ``{"error": class, "detail": message}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from runyard.errors import InvalidInput, RunyardError


def error_body(error: RunyardError) -> dict[str, str | None]:
    return {"error": type(error).__name__, "detail": error.message, "field": error.field}


def install(app: FastAPI) -> None:
    @app.exception_handler(RunyardError)
    async def runyard_error(_: Request, exc: RunyardError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = first.get("msg", "invalid request")
        error = InvalidInput(f"{location}: {message}" if location else message, field=location)
        return JSONResponse(error_body(error), status_code=422)
