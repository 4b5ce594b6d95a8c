"""Teams: create, read, delete; their members (tokens) and their quotas per cluster; and the
team a run is charged to.

A token may be in several teams; the first it joins is its default (the team its runs are
charged to when they name none), until another is made its default. Services take a
session and never commit it (the caller records the change in the audit log and commits).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import delete
from sqlmodel import Session, col, func, select

from protocol.roles import Role
from runyard.errors import AlreadyExists, Conflict, Forbidden, InvalidInput, NotFound
from runyard.status import ACTIVE, WAITING
from store import team_status
from store.clusters import get_cluster, resolve_cluster
from store.db import as_utc
from store.models import ApiToken, Run, RunSpec, utcnow
from store.models.teams import (
    QuotaPublic,
    QuotaSettings,
    Team,
    TeamCreate,
    TeamMember,
    TeamPublic,
    TeamQuota,
    TeamsPublic,
    check_team_name,
)
from store.tokens import Actor


def get_team(session: Session, name: str) -> Team:
    team = session.get(Team, name)
    if team is None:
        raise NotFound(f"no team named {name!r}")
    return team


def create_team(session: Session, data: TeamCreate) -> Team:
    if session.get(Team, data.name) is not None:
        raise AlreadyExists(f"team {data.name!r} exists already")
    team = Team(name=data.name, description=data.description)
    session.add(team)
    session.flush()
    return team


def ensure_team(session: Session, name: str) -> Team:
    """The team ``name``, made if missing (a clusters file names teams by their quotas)."""
    found = session.get(Team, name)
    if found is not None:
        return found
    try:
        check_team_name(name)
    except ValueError as exc:
        raise InvalidInput(f"team {name!r}: {exc}", field="team") from None
    return create_team(session, TeamCreate(name=name))


def live_run_count(session: Session, name: str) -> int:
    statuses = (*WAITING, *ACTIVE)
    query = select(func.count()).where(Run.team == name, col(Run.status).in_(statuses))
    return int(session.exec(query).one())


def delete_team(session: Session, name: str) -> None:
    """Delete a team with its memberships and quotas. Refused while runs charged to it are
    queued or active (they would be charged to a team that no longer exists); its ended
    runs keep its name in their history."""
    team = get_team(session, name)
    live = live_run_count(session, name)
    if live:
        raise Conflict(
            f"team {name!r} has {live} queued or active run(s); cancel them or let them end first"
        )
    members = list(session.exec(select(TeamMember).where(TeamMember.team == name)))
    session.execute(delete(TeamQuota).where(col(TeamQuota.team) == name))
    session.execute(delete(TeamMember).where(col(TeamMember.team) == name))
    for member in members:
        if member.is_default:
            _promote_default(session, member.token_id)
    session.delete(team)
    session.flush()


def team_public(session: Session, team: Team) -> TeamPublic:
    members = session.exec(
        select(ApiToken.name)
        .join(TeamMember, col(TeamMember.token_id) == col(ApiToken.id))
        .where(TeamMember.team == team.name)
        .order_by(col(TeamMember.created_at), col(ApiToken.name))
    )
    quotas = session.exec(
        select(TeamQuota).where(TeamQuota.team == team.name).order_by(col(TeamQuota.cluster))
    )
    return TeamPublic(
        name=team.name,
        description=team.description,
        created_at=as_utc(team.created_at),  # type: ignore[arg-type]
        members=list(members),
        quotas=[quota_public(q) for q in quotas],
    )


def list_teams(session: Session) -> TeamsPublic:
    """Every team by name (teams are few: an organisation's groups, not its runs)."""
    teams = list(session.exec(select(Team).order_by(col(Team.name))))
    return TeamsPublic(data=[team_public(session, t) for t in teams], count=len(teams))


# --- members ---------------------------------------------------------------------------------


def find_token(session: Session, ref: str) -> ApiToken:
    """A live API token by id, or by name when one live token has it."""
    row = session.get(ApiToken, ref)
    if row is not None and row.kind == "token" and row.revoked_at is None:
        return row
    named = list(
        session.exec(
            select(ApiToken).where(
                ApiToken.name == ref,
                ApiToken.kind == "token",
                col(ApiToken.revoked_at).is_(None),
            )
        )
    )
    if not named:
        raise NotFound(f"no live token with id or name {ref!r}")
    if len(named) > 1:
        ids = ", ".join(sorted(t.id for t in named))
        raise Conflict(f"{len(named)} tokens are named {ref!r} ({ids}); give the token's id")
    return named[0]


def memberships(session: Session, token_id: str) -> list[TeamMember]:
    """The token's teams, the one it joined first first."""
    query = (
        select(TeamMember)
        .where(TeamMember.token_id == token_id)
        .order_by(col(TeamMember.created_at), col(TeamMember.team))
    )
    return list(session.exec(query))


def add_member(
    session: Session, team: str, token_ref: str, *, default: bool | None = None
) -> tuple[ApiToken, TeamMember]:
    """Put a token in a team (again: no change but ``default``). Its first team is its
    default; ``default=True`` makes this one its default instead."""
    get_team(session, team)
    token = find_token(session, token_ref)
    if token.role not in (Role.ADMIN, Role.MEMBER):
        raise InvalidInput(
            f"token {token.name!r} is a {token.role} token; only admin and member tokens "
            "submit runs, so only they join teams",
            field="token",
        )
    others = memberships(session, token.id)
    member = session.get(TeamMember, (team, token.id))
    if member is None:
        member = TeamMember(team=team, token_id=token.id, is_default=not others)
    if default and not member.is_default:
        for other in others:
            if other.is_default and other.team != team:
                other.is_default = False
                session.add(other)
        member.is_default = True
    elif default is False and member.is_default and len(others) > 1:
        raise InvalidInput(
            f"team {team!r} is token {token.name!r}'s default; make another of its teams "
            "the default instead",
            field="default",
        )
    session.add(member)
    session.flush()
    return token, member


def remove_member(session: Session, team: str, token_ref: str) -> ApiToken:
    """Take a token out of a team; if it was its default, the team it joined next is."""
    get_team(session, team)
    token = find_token(session, token_ref)
    member = session.get(TeamMember, (team, token.id))
    if member is None:
        raise NotFound(f"token {token.name!r} is not in team {team!r}")
    was_default = member.is_default
    session.delete(member)
    session.flush()
    if was_default:
        _promote_default(session, token.id)
    return token


def _promote_default(session: Session, token_id: str) -> None:
    rest = memberships(session, token_id)
    if rest and not any(m.is_default for m in rest):
        rest[0].is_default = True
        session.add(rest[0])
        session.flush()


def default_team(session: Session, token_id: str) -> str | None:
    query = select(TeamMember.team).where(
        TeamMember.token_id == token_id, col(TeamMember.is_default)
    )
    return session.exec(query).first()


# --- quotas ----------------------------------------------------------------------------------


def quota_public(quota: TeamQuota) -> QuotaPublic:
    return QuotaPublic(**quota.model_dump(exclude={"updated_at"}))


def set_quota(session: Session, team: str, cluster: str, settings: QuotaSettings) -> TeamQuota:
    """Set (replace) a team's quota on a cluster: every field as given, the rest default."""
    get_team(session, team)
    get_cluster(session, cluster)
    quota = session.get(TeamQuota, (cluster, team)) or TeamQuota(cluster=cluster, team=team)
    for key, value in settings.model_dump().items():
        setattr(quota, key, value)
    quota.updated_at = utcnow()
    session.add(quota)
    session.flush()
    return quota


def clear_quota(session: Session, team: str, cluster: str) -> None:
    """Remove a team's quota on a cluster (a cluster with no quota left admits as before
    teams existed: priority, then submit time)."""
    get_team(session, team)
    get_cluster(session, cluster)
    quota = session.get(TeamQuota, (cluster, team))
    if quota is None:
        raise NotFound(f"team {team!r} has no quota on cluster {cluster!r}")
    session.delete(quota)
    session.flush()


def cluster_quotas(session: Session, cluster: str) -> list[QuotaPublic]:
    get_cluster(session, cluster)
    return [quota_public(q) for q in team_status.cluster_quotas(session, cluster)]


def apply_quotas(session: Session, cluster: str, quotas: Any, source: str) -> None:
    """A clusters file's ``quotas`` table for one cluster: ``{team: QuotaSettings}``; teams
    are made if missing. Quotas the file does not name are left as they are."""
    if not isinstance(quotas, dict):
        raise InvalidInput(f"{source}: cluster {cluster!r}: quotas must be a table of teams")
    for team, values in quotas.items():
        try:
            settings = QuotaSettings.model_validate(values)
        except ValueError as exc:
            raise InvalidInput(f"{source}: cluster {cluster!r}: quota of {team!r}: {exc}") from exc
        ensure_team(session, str(team))
        set_quota(session, str(team), cluster, settings)


# --- charging runs ---------------------------------------------------------------------------


def team_for(session: Session, actor: Actor, requested: str | None) -> str | None:
    """The team a run submitted by ``actor`` is charged to: the one it names, if the token
    is in it (admins may name any team); else the token's default team; else none."""
    if requested is not None:
        get_team(session, requested)
        if actor.role == Role.ADMIN:
            return requested
        if actor.token_id is None or session.get(TeamMember, (requested, actor.token_id)) is None:
            raise Forbidden(f"token {actor.name!r} is not in team {requested!r}")
        return requested
    if actor.token_id is None:
        return None
    return default_team(session, actor.token_id)


Spec = TypeVar("Spec", bound=RunSpec)


def charge(session: Session, actor: Actor, spec: Spec) -> Spec:
    """``spec`` with the team it is charged to set: a child run's is its parent's (a child
    naming another team is refused); any other's is ``team_for`` the submitting token.
    A non-preemptible run that could never start there is refused (``check_startable``)."""
    if spec.parent_run_id is not None:
        parent = session.get(Run, spec.parent_run_id)
        if parent is None:
            return spec  # the submit answers 404 for the parent
        if spec.team is not None and spec.team != parent.team:
            raise InvalidInput(
                f"a child run is charged to its parent's team ({parent.team or 'none'}), "
                f"not {spec.team!r}",
                field="team",
            )
        charged = spec.model_copy(update={"team": parent.team})
    else:
        charged = spec.model_copy(update={"team": team_for(session, actor, spec.team)})
    check_startable(session, charged)
    return charged


def check_startable(session: Session, spec: RunSpec) -> None:
    """On a cluster with team quotas a non-preemptible run may use only its team's quota
    (``scheduler.policy``): charged to no team, or to a team with no quota there, it
    would wait forever, so the submit is refused instead. (A quota cleared later leaves
    such runs waiting, and their pending reason says why.)"""
    if spec.preemptible:
        return
    cluster = resolve_cluster(session, spec.cluster)
    quotas = team_status.cluster_quotas(session, cluster.name)
    if not quotas or any(q.team == spec.team and q.slots > 0 for q in quotas):
        return
    whose = f"team {spec.team}" if spec.team else "runs of no team"
    raise InvalidInput(
        f"cluster {cluster.name} has team quotas and {whose} has none there: a "
        "non-preemptible run may use only its team's quota, so it would never start "
        "(submit it preemptible, or charge it to a team with a quota)",
        field="preemptible",
    )
