"""Dependencies every route shares: settings, a database session, Redis, stores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import redis
import redis.asyncio
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from api.rate_limits import SubmitLimiter
from api.storage import RunFileStore, SnapshotStore
from protocol.settings import Settings


@dataclass
class Services:
    """Built once at start-up (see ``api.app.create_app``)."""

    settings: Settings
    engine: Engine
    redis: redis.Redis
    aredis: redis.asyncio.Redis
    snapshots: SnapshotStore
    files: RunFileStore
    submit_limiter: SubmitLimiter


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with Session(services.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
