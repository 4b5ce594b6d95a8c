"""Registered environments: register a version, read one, list the latest of each name
(``Environment.register / get / list`` in the SDK, ``runyard env list / show``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.auth import ALLOW, ActorDep
from api.deps import SessionDep
from protocol.environments import EnvironmentSpec
from store import audit
from store import environments as environment_service
from store.models import RegisteredEnvironmentPublic, RegisteredEnvironmentsPublic

router = APIRouter(prefix="/environments", tags=["environments"])


@router.get("", operation_id="list_environments", dependencies=[ALLOW.read])
def list_environments(session: SessionDep) -> RegisteredEnvironmentsPublic:
    """The latest version of each registered environment, by name."""
    rows = environment_service.list_latest(session)
    return RegisteredEnvironmentsPublic(
        data=[environment_service.public(r) for r in rows], count=len(rows)
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
def list_environment_versions(name: str, session: SessionDep) -> RegisteredEnvironmentsPublic:
    """Every version of the environment, newest first."""
    rows = environment_service.versions(session, name)
    return RegisteredEnvironmentsPublic(
        data=[environment_service.public(r) for r in rows], count=len(rows)
    )
