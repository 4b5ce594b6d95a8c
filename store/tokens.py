"""Who is calling: bearer tokens, Studio sessions and run-scoped tokens, turned into an Actor.

Three kinds of secret, told apart by prefix:

- ``ryt_…`` API tokens (admin, member, viewer, worker). Random 256-bit secrets; only their
  SHA-256 is stored, so a leaked database gives no usable token. A plain hash suffices for
  secrets this long (a slow password hash protects guessable secrets, which these are not).
- ``rys_…`` Studio sessions, made from a token at sign-in, stored the same way and dead
  when their token is revoked.
- ``ryr_<run>.<attempt>.<mac>`` run tokens. Derived, not stored: an HMAC of the run id and
  attempt under the API's signing key, handed to the worker that starts that attempt
  (never put in the broker). Valid only while that attempt of that run is active.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from protocol.roles import READERS, Role
from runyard.errors import Forbidden, NotFound, Unauthorized
from runyard.status import RunStatus
from store.db import as_utc
from store.models import ApiToken, Run, TokenCreate, TokenPublic, utcnow
from store.paging import Key, Section, read_page

TOKEN_PREFIX = "ryt_"
SESSION_PREFIX = "rys_"
RUN_PREFIX = "ryr_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Actor:
    """The caller of one request, as every permission check sees it."""

    name: str
    role: str  # a Role
    token_id: str | None = None
    clusters: frozenset[str] = field(default_factory=frozenset)  # workers: the clusters served
    run_id: str | None = None  # run tokens: the run whose tree they may write
    session: bool = False  # authenticated by the Studio cookie (so CSRF rules apply)

    def serves(self, cluster: str | None) -> bool:
        return self.role == Role.WORKER and ("*" in self.clusters or cluster in self.clusters)

    @property
    def reads_everything(self) -> bool:
        return self.role in READERS


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_id() -> str:
    return "tok_" + secrets.token_hex(6)


def public(token: ApiToken) -> TokenPublic:
    return TokenPublic(
        id=token.id,
        name=token.name,
        role=token.role,
        clusters=list(token.clusters or []),
        created_by=token.created_by,
        created_at=as_utc(token.created_at),  # type: ignore[arg-type]
        expires_at=as_utc(token.expires_at),
        revoked_at=as_utc(token.revoked_at),
        last_used_at=as_utc(token.last_used_at),
    )


def create_token(
    session: Session, spec: TokenCreate, created_by: str | None, secret: str | None = None
) -> tuple[ApiToken, str]:
    """A new token and its secret (shown to the caller once). ``secret`` registers a given
    one, as bootstrap does with a secret from the deployment's configuration."""
    secret = secret or TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        id=_new_id(),
        name=spec.name,
        role=spec.role,
        clusters=spec.clusters,
        secret_hash=hash_secret(secret),
        created_by=created_by,
        expires_at=spec.expires_at,
    )
    session.add(token)
    session.flush()
    return token, secret


def ensure_token(session: Session, spec: TokenCreate, secret: str) -> bool:
    """Register ``secret`` unless it is known (bootstrap is idempotent). True if added.

    A worker token bootstrap registered before follows the clusters the deployment binds it
    to now: narrowing a pool's clusters takes effect at the next start, as widening does."""
    query = select(ApiToken).where(ApiToken.secret_hash == hash_secret(secret))
    known = session.exec(query).first()
    if known is None:
        create_token(session, spec, created_by="bootstrap", secret=secret)
        return True
    bound_elsewhere = sorted(known.clusters or []) != sorted(spec.clusters)
    if (
        known.created_by == "bootstrap"
        and known.role == spec.role == Role.WORKER
        and bound_elsewhere
    ):
        known.clusters = list(spec.clusters)
        session.add(known)
        session.flush()
    return False


def live_bootstrap_tokens(session: Session, name: str) -> list[ApiToken]:
    """The unrevoked tokens the API registered from its bootstrap settings under ``name``."""
    query = select(ApiToken).where(
        ApiToken.name == name,
        ApiToken.created_by == "bootstrap",
        ApiToken.kind == "token",
        col(ApiToken.revoked_at).is_(None),
    )
    return list(session.exec(query))


TOKEN_ORDER = (Key(col(ApiToken.created_at), datetime), Key(col(ApiToken.id), str))


def list_tokens(
    session: Session,
    *,
    include_revoked: bool,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
) -> tuple[list[ApiToken], int, str | None]:
    """A page of tokens, oldest first (``store.paging``), how many there are, and the
    cursor of the next page (None at the end)."""
    where: list[Any] = [ApiToken.kind == "token"]
    if not include_revoked:
        where.append(col(ApiToken.revoked_at).is_(None))
    total = session.exec(select(func.count()).select_from(ApiToken).where(*where)).one()
    page = read_page(
        session,
        f"tokens:{int(include_revoked)}",
        ApiToken,
        [Section(where, TOKEN_ORDER, ("created_at", "id"))],
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    return [row for _, row in page.rows], total, page.next_cursor


def revoke(session: Session, token_id: str) -> ApiToken:
    """Revoke a token and every Studio session made from it; effective on the next request."""
    token = session.get(ApiToken, token_id)
    if token is None or token.kind != "token":
        raise NotFound(f"no token with id {token_id!r}")
    now = utcnow()
    if token.revoked_at is None:
        token.revoked_at = now
        session.add(token)
    for child in session.exec(select(ApiToken).where(ApiToken.parent_id == token_id)):
        child.revoked_at = child.revoked_at or now
        session.add(child)
    session.flush()
    return token


def start_session(session: Session, actor: Actor, hours: float) -> str:
    """A Studio session for a person's token; its secret goes into an HttpOnly cookie."""
    if actor.session or actor.token_id is None or not actor.reads_everything:
        raise Forbidden("sign in to the Studio with an admin, member or viewer token")
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            id=_new_id(),
            name=actor.name,
            role=actor.role,
            secret_hash=hash_secret(secret),
            kind="session",
            parent_id=actor.token_id,
            created_by=actor.name,
            expires_at=utcnow() + timedelta(hours=hours),
        )
    )
    session.flush()
    return secret


def end_session(session: Session, secret: str) -> None:
    row = session.exec(select(ApiToken).where(ApiToken.secret_hash == hash_secret(secret))).first()
    if row is not None and row.kind == "session" and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)


def csrf_token(key: bytes, session_secret: str) -> str:
    """The value a Studio page must echo in ``X-CSRF-Token``: bound to its session, so a
    cookie planted by another site cannot pair with a header it chose."""
    return hmac.new(key, b"csrf:" + session_secret.encode(), hashlib.sha256).hexdigest()


def authenticate(session: Session, key: bytes, secret: str) -> Actor:
    if secret.startswith(RUN_PREFIX):
        return _run_actor(session, key, secret)
    row = session.exec(select(ApiToken).where(ApiToken.secret_hash == hash_secret(secret))).first()
    if row is None:
        raise Unauthorized("unknown token")
    _check_alive(row, "token" if row.kind == "token" else "session")
    if row.kind == "session":
        parent = session.get(ApiToken, row.parent_id) if row.parent_id else None
        if parent is None:
            raise Unauthorized("the session's token no longer exists")
        _check_alive(parent, "the session's token")
    _touch(session, row)
    return Actor(
        name=row.name,
        role=row.role,
        token_id=row.parent_id if row.kind == "session" else row.id,
        clusters=frozenset(row.clusters or ()),
        session=row.kind == "session",
    )


def _check_alive(row: ApiToken, what: str) -> None:
    if row.revoked_at is not None:
        raise Unauthorized(f"{what} {row.name!r} was revoked")
    expires = as_utc(row.expires_at)
    if expires is not None and expires <= datetime.now(UTC):
        raise Unauthorized(f"{what} {row.name!r} expired")


def _touch(session: Session, row: ApiToken) -> None:
    """Record use at most once a minute: a write per request would cost more than the
    lookup, and ``token list`` only needs to say roughly when. (The caller commits.)"""
    last = as_utc(row.last_used_at)
    now = utcnow()
    if last is None or now - last > LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)


# --- run tokens -----------------------------------------------------------------------------


def mint_run_token(key: bytes, run_id: str, attempt: int) -> str:
    return f"{RUN_PREFIX}{run_id}.{attempt}.{_run_mac(key, run_id, attempt)}"


def _run_mac(key: bytes, run_id: str, attempt: int) -> str:
    message = f"run:{run_id}:{attempt}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:40]


def _run_actor(session: Session, key: bytes, secret: str) -> Actor:
    try:
        run_id, attempt_text, mac = secret[len(RUN_PREFIX) :].rsplit(".", 2)
        attempt = int(attempt_text)
    except ValueError:
        raise Unauthorized("malformed run token") from None
    if not hmac.compare_digest(mac, _run_mac(key, run_id, attempt)):
        raise Unauthorized("invalid run token")
    run = session.get(Run, run_id)
    if run is None:
        raise Unauthorized("invalid run token")
    if run.status.is_terminal:
        raise Unauthorized(f"run token expired: run {run_id} has ended ({run.status.value})")
    if run.attempt != attempt:
        raise Unauthorized(f"run token expired: run {run_id} is on attempt {run.attempt}")
    if run.status == RunStatus.QUEUED and run.dispatched_at is None:
        # Requeued after its node was lost: the attempt that held this token is over.
        raise Unauthorized(f"run token expired: run {run_id} is waiting to start again")
    if run.issued_by_token:
        issuer = session.get(ApiToken, run.issued_by_token)
        if issuer is None:
            raise Unauthorized(f"the token that started run {run_id} no longer exists")
        _check_alive(issuer, "the token that started this run,")
    return Actor(name=f"run:{run_id}", role=Role.RUN, run_id=run_id)
