"""Environment builds: ``env.build(ws)`` queues a run that builds the environment and ends;
``env.get_image_details(ws)`` reads what the latest completed run with it recorded."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.auth import ALLOW, ActorDep
from api.deps import ServicesDep, SessionDep
from store import audit, run_listings, teams
from store import environment_builds as builds
from store.announcements import wake
from store.models import EnvironmentBuildSpec, RunDetails

router = APIRouter(prefix="/environment-builds", tags=["environments"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="build_environment",
    dependencies=[ALLOW.submit],
)
def build_environment(
    spec: EnvironmentBuildSpec, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> RunDetails:
    """Queue a build of the environment on a cluster's worker, ahead of any run: a run of
    its own (experiment ``environment-builds``) whose log is the build log."""
    services.submit_limiter.hit(actor)
    team = teams.team_for(session, actor, None)
    run = builds.submit_build(session, spec, submitted_by=actor.name, team=team)
    audit.record(session, actor, "environment.build", run.id, cluster=run.cluster)
    session.commit()
    wake(services.redis, run.cluster)
    return run_listings.describe(session, services.redis, run)


@router.get("/latest", operation_id="latest_environment_build", dependencies=[ALLOW.read])
def latest_environment_build(
    session: SessionDep,
    services: ServicesDep,
    name: Annotated[str, Query(min_length=1, max_length=255)],
    version: Annotated[str | None, Query(max_length=64)] = None,
) -> RunDetails:
    """The latest completed run (a build or any other) that ran with environment ``name``
    at ``version`` (none: unregistered), with the environment it recorded; for a registered
    version, one whose build was made of that version's content."""
    run = builds.latest_recorded(session, name, version)
    return run_listings.describe(session, services.redis, run)
