"""Registered environments: register a version, read one, list the latest of each name
(``Environment.register / get / list`` in the SDK, ``runyard env list / show``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.auth import ALLOW, ActorDep
from api.deps import SessionDep
from api.paging import DEFAULT_PAGE, Cursor, Limit, Offset
from protocol.environments import EnvironmentSpec
from store import audit
from store import environments as environment_service
from store.models import RegisteredEnvironmentPublic, RegisteredEnvironmentsPublic

router = APIRouter(prefix="/environments", tags=["environments"])


@router.get("", operation_id="list_environments", dependencies=[ALLOW.read])
def list_environments(
    session: SessionDep, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None, offset: Offset = 0
) -> RegisteredEnvironmentsPublic:
    """A page of the latest version of each registered environment, by name; follow
    ``next_cursor`` for more."""
    page = environment_service.list_latest(session, limit=limit, cursor=cursor, offset=offset)
    return _page(page)


def _page(page: environment_service.EnvironmentPage) -> RegisteredEnvironmentsPublic:
    return RegisteredEnvironmentsPublic(
        data=[environment_service.public(r) for r in page.rows],
        count=page.count,
        next_cursor=page.next_cursor,
    )


@router.post("/{name}", operation_id="register_environment", dependencies=[ALLOW.submit])
def register_environment(
    name: str, body: EnvironmentSpec, session: SessionDep, actor: ActorDep, response: Response
) -> RegisteredEnvironmentPublic:
    """A new version (201) when the environment differs from the latest of its name; the
    latest itself (200) when it does not."""
    row, created = environment_service.register(session, name, body, created_by=actor.name)
    if created:
        audit.record(session, actor, "environment.register", name, version=row.version)
        response.status_code = status.HTTP_201_CREATED
    session.commit()
    return environment_service.public(row)


@router.get("/{name}", operation_id="get_environment", dependencies=[ALLOW.read])
def get_environment(
    name: str,
    session: SessionDep,
    version: Annotated[int | None, Query(ge=1, description="None: the latest")] = None,
) -> RegisteredEnvironmentPublic:
    return environment_service.public(environment_service.get(session, name, version))


@router.get("/{name}/versions", operation_id="list_environment_versions", dependencies=[ALLOW.read])
def list_environment_versions(
    name: str,
    session: SessionDep,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> RegisteredEnvironmentsPublic:
    """A page of the environment's versions, newest first; follow ``next_cursor``."""
    page = environment_service.versions(session, name, limit=limit, cursor=cursor, offset=offset)
    return _page(page)
