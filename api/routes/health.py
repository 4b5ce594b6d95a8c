"""Liveness and readiness, for load balancers and Kubernetes probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api.auth import current_actor
from api.deps import Services, ServicesDep
from protocol import keys
from protocol.leader import current_leader
from runyard.errors import Forbidden
from store.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
def healthz() -> dict[str, str]:
    """Alive: the process answers. (Whether its dependencies do is /readyz.)"""
    return {"status": "ok"}


def _reader_unless_public(request: Request, services: ServicesDep) -> None:
    """Readiness can reveal what is down, so it needs a reader's token unless the operator
    opened it (``RUNYARD_PUBLIC_READYZ``) for probes that cannot send one."""
    if services.settings.public_readyz:
        return
    if not current_actor(request, services).reads_everything:
        raise Forbidden("readiness needs an admin, member or viewer token")


@router.get("/readyz", operation_id="readyz", dependencies=[Depends(_reader_unless_public)])
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready: the database and Redis answer, and a scheduler has swept recently. Also says
    which scheduler leads (admits and runs the watchdog) and with which fencing token."""
    checks = await asyncio.to_thread(_checks, services)
    ready = all(v == "ok" for v in checks.values())
    leader = await asyncio.to_thread(_leader, services)
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks, "leader": leader},
        status_code=200 if ready else 503,
    )


def _leader(services: Services) -> dict[str, object] | None:
    try:
        found = current_leader(services.redis)
    except Exception:
        return None
    return None if found is None else {"scheduler": found.name, "token": found.token}


def _checks(services: Services) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        ping(services.engine)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        services.redis.ping()
        checks["redis"] = "ok"
        alive = services.redis.exists(keys.SCHEDULER_ALIVE)
        checks["scheduler"] = "ok" if alive else "no scheduler has reported recently"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
        checks["scheduler"] = "unknown (redis unreachable)"
    return checks
