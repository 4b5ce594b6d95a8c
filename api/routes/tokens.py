"""API tokens: create (the secret is shown once), list, revoke. Admins only."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.auth import ALLOW, ActorDep
from api.deps import SessionDep
from api.paging import DEFAULT_PAGE, Cursor, Limit, Offset
from store import audit, tokens
from store.models import TokenCreate, TokenCreated, TokenPublic, TokensPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_token",
    dependencies=[ALLOW.admin],
)
def create_token(body: TokenCreate, session: SessionDep, actor: ActorDep) -> TokenCreated:
    token, secret = tokens.create_token(session, body, created_by=actor.name)
    audit.record(
        session,
        actor,
        "token.create",
        token.id,
        name=body.name,
        role=body.role,
        clusters=body.clusters,
    )
    session.commit()
    return TokenCreated(**tokens.public(token).model_dump(), token=secret)


@router.get("", operation_id="list_tokens", dependencies=[ALLOW.admin])
def list_tokens(
    session: SessionDep,
    include_revoked: bool = False,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    offset: Offset = 0,
) -> TokensPublic:
    """A page of tokens, oldest first; follow ``next_cursor`` for more."""
    rows, total, next_cursor = tokens.list_tokens(
        session, include_revoked=include_revoked, limit=limit, offset=offset, cursor=cursor
    )
    return TokensPublic(data=[tokens.public(t) for t in rows], count=total, next_cursor=next_cursor)


@router.post("/{token_id}/revoke", operation_id="revoke_token", dependencies=[ALLOW.admin])
def revoke_token(token_id: str, session: SessionDep, actor: ActorDep) -> TokenPublic:
    """Refused from the next request on, Studio sessions made from it included."""
    token = tokens.revoke(session, token_id)
    audit.record(session, actor, "token.revoke", token.id, name=token.name)
    session.commit()
    return tokens.public(token)
