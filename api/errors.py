"""One place that turns errors into HTTP responses: ``{"error": class, "detail": message}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError

from runyard.errors import Conflict, InvalidInput, RunyardError, ServiceUnavailable

log = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)


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
        return JSONResponse(error_body(invalid_input(exc.errors())), status_code=422)


def validate_json(model: type[Model], raw: str | bytes, *, field: str = "") -> Model:
    """``raw`` JSON read as ``model``, for a route that reads a body (or a form field, named
    by ``field``) itself: what fails is answered as a request body that fails validation is,
    with ``field`` before the location."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_input(exc.errors(), prefix=field) from exc


# What pydantic puts before a validator's own words; the words are for people, this is not.
VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def invalid_input(errors: Sequence[Any], prefix: str = "") -> InvalidInput:
    """The first validation error in plain words: a validator's own sentence as it wrote
    it ("executor must be one of local, docker"), pydantic's sentences with the field for
    "Input" ("nodes should be greater than or equal to 1"). ``field`` keeps the full
    location (``spec.script``) for programs."""
    first = errors[0] if errors else {}
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join([prefix, *where] if prefix else where)
    named = [p for p in where if p not in ("query", "path", "header")]
    # environment.docker.shm_size, arguments[3]: the path as the request spelt it
    name = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in named).lstrip(".")
    message = str(first.get("msg") or "invalid request")
    for marker in VALIDATOR_PREFIXES:
        if message.startswith(marker):
            message = message[len(marker) :]
            if marker.startswith("Assertion"):  # then python's "assert x < y" line
                message = message.splitlines()[0].strip()
            break
    else:
        message = _pydantic_in_words(first.get("type", ""), message, name)
    return InvalidInput(message, field=field or None)


def _pydantic_in_words(kind: str, message: str, name: str) -> str:
    if not name:
        return message
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        return f"unknown field {name!r}"
    if message.startswith("Input should"):
        return f"{name} should{message[len('Input should') :]}"
    if message.startswith("Input "):
        return f"{name}: {message[len('Input ') :]}"
    return f"{name}: {message[:1].lower()}{message[1:]}"
