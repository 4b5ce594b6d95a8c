"""One place that turns errors into HTTP responses: ``{"error": class, "detail": message}``."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError

from runyard.errors import Conflict, InvalidInput, RunyardError, ServiceUnavailable

log = logging.getLogger(__name__)


def error_body(error: RunyardError) -> dict[str, str | None]:
    return {"error": type(error).__name__, "detail": error.message, "field": error.field}


def install(app: FastAPI) -> None:
    @app.exception_handler(RunyardError)
    async def runyard_error(_: Request, exc: RunyardError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=exc.http_status)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis error: %s", exc)
        error = ServiceUnavailable("Redis is unavailable; try again shortly")
        return JSONResponse(error_body(error), status_code=503)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database error: %s", exc)
        error = ServiceUnavailable("the database is unavailable; try again shortly")
        return JSONResponse(error_body(error), status_code=503)

    @app.exception_handler(IntegrityError)
    async def concurrent_change(_: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc)
        error = Conflict("a concurrent request changed the same record; try again")
        return JSONResponse(error_body(error), status_code=409)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = first.get("msg", "invalid request")
        error = InvalidInput(f"{location}: {message}" if location else message, field=location)
        return JSONResponse(error_body(error), status_code=422)
