"""Studio sign-in: a token in, an HttpOnly session cookie out; and who am I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from api.auth import ALLOW, CSRF_COOKIE, SESSION_COOKIE, ActorDep, describe
from api.deps import ServicesDep, SessionDep
from runyard.errors import Forbidden
from store import audit, tokens

router = APIRouter(tags=["session"])


@router.post("/session", operation_id="sign_in", dependencies=[ALLOW.self])
def sign_in(
    request: Request,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    """Sign in with ``Authorization: Bearer <token>`` (admin, member or viewer). Sets the
    session cookie (HttpOnly, SameSite=Strict) and returns the CSRF token the page must send
    back in ``X-CSRF-Token`` with every change."""
    if actor.session:
        raise Forbidden("already signed in; sign in with a token, not a session")
    secret = tokens.start_session(session, actor, services.settings.session_hours)
    audit.record(session, actor, "session.start", actor.name)
    session.commit()
    csrf = tokens.csrf_token(services.settings.signing_key, secret)
    max_age = int(services.settings.session_hours * 3600)
    secure = services.settings.cookie_secure
    if secure is None:
        secure = request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=secure,
        path="/",
    )
    return {**describe(actor), "csrf_token": csrf}


@router.delete("/session", operation_id="sign_out", dependencies=[ALLOW.self])
def sign_out(request: Request, response: Response, session: SessionDep) -> dict[str, str]:
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        tokens.end_session(session, secret)
        session.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"status": "signed out"}


@router.get("/whoami", operation_id="whoami", dependencies=[ALLOW.self])
def whoami(actor: ActorDep) -> dict[str, Any]:
    return describe(actor)
