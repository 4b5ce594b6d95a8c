"""Authentication and the permission rules every route declares.

Each route names one ``Rule`` in its decorator (``dependencies=[ALLOW.read]``); the app
refuses to start if a route has none (``check_every_route_guarded``), so a new endpoint
cannot be born open. Callers present a bearer token, or the Studio's session cookie; a
state-changing request made with the cookie must also carry the page's CSRF token and come
from the API's own origin.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from sqlmodel import Session

from api.deps import Services, ServicesDep
from protocol.roles import Role
from runyard.errors import Forbidden, Unauthorized
from store import runs as run_service
from store import tokens
from store.models import Run
from store.run_tree import in_tree
from store.tokens import Actor

SESSION_COOKIE = "runyard_session"
CSRF_COOKIE = "runyard_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def current_actor(request: Request, services: ServicesDep) -> Actor:
    """Its own short session: a streaming response must not hold a pooled connection.
    (FastAPI resolves it once per request, however many rules ask for it.) It commits the
    token's last use, which ``tokens.authenticate`` notes."""
    with Session(services.engine, expire_on_commit=False) as session:
        actor = _authenticate(request, services, session)
        session.commit()
        return actor


def _authenticate(request: Request, services: Services, session: Session) -> Actor:
    header = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    key = services.settings.signing_key
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        actor = tokens.authenticate(session, key, secret.strip())
    elif cookie:
        actor = tokens.authenticate(session, key, cookie)
        if not actor.session:
            raise Unauthorized("the session cookie holds no session; sign in again")
        if request.method not in SAFE_METHODS:
            _check_same_site(request, tokens.csrf_token(key, cookie))
    else:
        raise Unauthorized(
            "no token: send 'Authorization: Bearer <token>' (make one with `runyard token "
            "create`) or sign in to the Studio"
        )
    return actor


ActorDep = Annotated[Actor, Depends(current_actor)]


def _check_same_site(request: Request, expected_csrf: str) -> None:
    """Cookie-authenticated writes: the Origin (when sent) must be this service, and the
    page must echo the CSRF token it got at sign-in. A cross-site form can do neither."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin:
        parts = urlsplit(origin)
        if parts.netloc != request.headers.get("host", ""):
            raise Forbidden(f"cross-site request from {parts.scheme}://{parts.netloc} refused")
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, expected_csrf):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header for a session request")


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One permission: who may call a route. ``check`` raises Forbidden with a reason."""

    name: str
    check: Callable[[Actor, Request, Session], None]

    def __call__(self, request: Request, services: ServicesDep, actor: ActorDep) -> Actor:
        with Session(services.engine) as session:
            self.check(actor, request, session)
        return actor


def _roles(*allowed: str) -> Callable[[Actor, Request, Session], None]:
    def check(actor: Actor, request: Request, session: Session) -> None:
        if actor.role not in allowed:
            raise Forbidden(
                f"{_who(actor)} may not {_what(request)} (needs {' or '.join(allowed)})"
            )

    return check


def _who(actor: Actor) -> str:
    return f"{actor.role} token {actor.name!r}"


def _what(request: Request) -> str:
    return f"{request.method} {request.url.path}"


def _run_of(request: Request, session: Session) -> Run | None:
    run_id = request.path_params.get("run_id")
    return session.get(Run, run_id) if run_id else None


def _in_own_tree(actor: Actor, run: Run | None, session: Session) -> bool:
    """A run token's reach: its run, the runs below it, and the runs above it (Azure's
    child runs log to their parent or root: ``run.parent.log(...)``)."""
    return (
        actor.role == Role.RUN
        and actor.run_id is not None
        and run is not None
        and (in_tree(session, run.id, actor.run_id) or in_tree(session, actor.run_id, run.id))
    )


def _read_run(actor: Actor, request: Request, session: Session) -> None:
    if actor.reads_everything:
        return
    run = _run_of(request, session)
    if run is None and actor.role in (Role.RUN, Role.WORKER):
        return  # the route answers 404; it reveals nothing a 403 would not
    if _in_own_tree(actor, run, session):
        return
    raise Forbidden(f"{_who(actor)} may only read its own run")


def _write_run(actor: Actor, request: Request, session: Session) -> None:
    if actor.role in (Role.ADMIN, Role.MEMBER):
        return
    run = _run_of(request, session)
    if run is None and actor.role in (Role.RUN, Role.WORKER):
        return
    if _in_own_tree(actor, run, session):
        return
    if run is not None and actor.serves(run.cluster):
        return
    raise Forbidden(f"{_who(actor)} may not write to run {request.path_params.get('run_id')}")


def _cancel_run(actor: Actor, request: Request, session: Session) -> None:
    """People who submit, and a run itself (``Run.cancel()`` in the script), for its tree."""
    if actor.role in (Role.ADMIN, Role.MEMBER):
        return
    run = _run_of(request, session)
    if _in_own_tree(actor, run, session) or (run is None and actor.role == Role.RUN):
        return
    raise Forbidden(f"{_who(actor)} may not end run {request.path_params.get('run_id')}")


def _serves_run(actor: Actor, request: Request, session: Session) -> None:
    """Only a worker serving the run's cluster (admins too, for operators' tools)."""
    if actor.role == Role.ADMIN:
        return
    run = _run_of(request, session)
    if run is not None and actor.serves(run.cluster):
        return
    if run is None and actor.role == Role.WORKER:
        return
    where = f"cluster {run.cluster!r}" if run is not None else "that cluster"
    raise Forbidden(f"{_who(actor)} does not serve {where} (run {request.path_params['run_id']})")


def _run_snapshot(actor: Actor, request: Request, session: Session) -> None:
    """Readers, a run for its own tree, and workers serving the run's cluster."""
    if actor.role == Role.WORKER:
        _serves_run(actor, request, session)
    else:
        _read_run(actor, request, session)


def _snapshot_by_digest(actor: Actor, request: Request, session: Session) -> None:
    """Workers fetch a snapshot by digest only if some run of a cluster they serve uses it."""
    if actor.reads_everything:
        return
    if actor.role == Role.WORKER:
        digest = request.path_params.get("digest")
        clusters = None if "*" in actor.clusters else actor.clusters
        if run_service.uses_snapshot(session, str(digest), clusters):
            return
        raise Forbidden(f"{_who(actor)} serves no run that uses snapshot {digest}")
    raise Forbidden(f"{_who(actor)} may not read snapshots")


def _anyone(actor: Actor, request: Request, session: Session) -> None:
    """Any valid token: the caller asks about itself."""


class ALLOW:
    """The rules, named for what they let through."""

    read = Depends(Rule("read", _roles(Role.ADMIN, Role.MEMBER, Role.VIEWER)))
    read_run = Depends(Rule("read_run", _read_run))
    write_run = Depends(Rule("write_run", _write_run))
    run_snapshot = Depends(Rule("run_snapshot", _run_snapshot))
    snapshot = Depends(Rule("snapshot", _snapshot_by_digest))
    submit = Depends(Rule("submit", _roles(Role.ADMIN, Role.MEMBER)))
    # People; a run's own token too, for child runs of its tree (checked on the spec).
    submit_run = Depends(Rule("submit_run", _roles(Role.ADMIN, Role.MEMBER, Role.RUN)))
    cancel_run = Depends(Rule("cancel_run", _cancel_run))
    serves_run = Depends(Rule("serves_run", _serves_run))
    admin = Depends(Rule("admin", _roles(Role.ADMIN)))
    self = Depends(Rule("self", _anyone))


PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})  # plus the Studio's static pages


def rule_of(route: APIRoute) -> str | None:
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, Rule):
            return dependency.call.name
    return None


def check_every_route_guarded(app: FastAPI, public: frozenset[str] = frozenset()) -> None:
    """Refuse to serve with an endpoint that names no rule (public ones are listed)."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in PUBLIC_PATHS | public:
            continue
        if not rule_of(route):
            raise RuntimeError(f"route {route.path} declares no permission rule (api/auth.py)")


def describe(actor: Actor) -> dict[str, Any]:
    return {
        "name": actor.name,
        "role": actor.role,
        "token_id": actor.token_id,
        "clusters": sorted(actor.clusters),
        "run_id": actor.run_id,
        "session": actor.session,
    }
