"""Teams: create, read, delete; their members (tokens) and quotas per cluster. Admins
change them; any person's token reads them (a submitter sees which team it may name)."""

from __future__ import annotations

from fastapi import APIRouter, Body, status

from api.auth import ALLOW, ActorDep
from api.deps import ServicesDep, SessionDep
from store import audit
from store import teams as team_service
from store.announcements import wake
from store.models.teams import (
    QuotaPublic,
    QuotaSettings,
    QuotasPublic,
    TeamCreate,
    TeamMembership,
    TeamPublic,
    TeamsPublic,
)

router = APIRouter(tags=["teams"])


def _view(session: SessionDep, name: str) -> TeamPublic:
    return team_service.team_public(session, team_service.get_team(session, name))


@router.get("/teams", operation_id="list_teams", dependencies=[ALLOW.read])
def list_teams(session: SessionDep) -> TeamsPublic:
    """Every team by name, with its members (token names) and quotas."""
    return team_service.list_teams(session)


@router.post(
    "/teams",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_team",
    dependencies=[ALLOW.admin],
)
def create_team(body: TeamCreate, session: SessionDep, actor: ActorDep) -> TeamPublic:
    team = team_service.create_team(session, body)
    audit.record(session, actor, "team.create", team.name, description=body.description)
    session.commit()
    return _view(session, team.name)


@router.get("/teams/{team}", operation_id="get_team", dependencies=[ALLOW.read])
def get_team(team: str, session: SessionDep) -> TeamPublic:
    return _view(session, team)


@router.delete("/teams/{team}", operation_id="delete_team", dependencies=[ALLOW.admin])
def delete_team(
    team: str, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> TeamPublic:
    """Delete a team, its memberships and quotas (refused while runs charged to it are
    queued or active). Answers the team as it was."""
    before = _view(session, team)
    team_service.delete_team(session, team)
    audit.record(session, actor, "team.delete", team)
    session.commit()
    for quota in before.quotas:
        wake(services.redis, quota.cluster)  # capacity it held may admit others now
    return before


@router.put(
    "/teams/{team}/members/{token}", operation_id="add_team_member", dependencies=[ALLOW.admin]
)
def add_member(
    team: str,
    token: str,
    session: SessionDep,
    actor: ActorDep,
    body: TeamMembership | None = Body(default=None),
) -> TeamPublic:
    """Put a token (by id, or by name when one live token has it) in the team."""
    default = body.default if body is not None else None
    row, member = team_service.add_member(session, team, token, default=default)
    audit.record(
        session,
        actor,
        "team.member.add",
        team,
        token=row.id,
        name=row.name,
        default=member.is_default,
    )
    session.commit()
    return _view(session, team)


@router.delete(
    "/teams/{team}/members/{token}",
    operation_id="remove_team_member",
    dependencies=[ALLOW.admin],
)
def remove_member(team: str, token: str, session: SessionDep, actor: ActorDep) -> TeamPublic:
    row = team_service.remove_member(session, team, token)
    audit.record(session, actor, "team.member.remove", team, token=row.id, name=row.name)
    session.commit()
    return _view(session, team)


@router.put(
    "/teams/{team}/quotas/{cluster}", operation_id="set_team_quota", dependencies=[ALLOW.admin]
)
def set_quota(
    team: str,
    cluster: str,
    body: QuotaSettings,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorDep,
) -> QuotaPublic:
    """Set the team's quota on the cluster (every field as given; the rest default)."""
    quota = team_service.set_quota(session, team, cluster, body)
    audit.record(
        session, actor, "team.quota.set", team, cluster=cluster, **body.model_dump(mode="json")
    )
    session.commit()
    wake(services.redis, cluster)
    return team_service.quota_public(quota)


@router.delete(
    "/teams/{team}/quotas/{cluster}",
    operation_id="clear_team_quota",
    dependencies=[ALLOW.admin],
)
def clear_quota(
    team: str, cluster: str, session: SessionDep, services: ServicesDep, actor: ActorDep
) -> TeamPublic:
    team_service.clear_quota(session, team, cluster)
    audit.record(session, actor, "team.quota.clear", team, cluster=cluster)
    session.commit()
    wake(services.redis, cluster)
    return _view(session, team)


@router.get(
    "/clusters/{cluster}/quotas", operation_id="list_cluster_quotas", dependencies=[ALLOW.read]
)
def cluster_quotas(cluster: str, session: SessionDep) -> QuotasPublic:
    """The quotas of every team on the cluster, by team."""
    quotas = team_service.cluster_quotas(session, cluster)
    return QuotasPublic(data=quotas, count=len(quotas))
