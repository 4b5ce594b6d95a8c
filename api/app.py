"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from api import errors
from api.auth import ALLOW, check_every_route_guarded
from api.body_limits import BodyLimit
from api.deps import Services
from api.metrics import RunyardCollector
from api.rate_limits import SubmitLimiter
from api.routes import (
    audit,
    clusters,
    experiments,
    health,
    runs,
    session,
    snapshots,
    tokens,
    tracking,
    workers,
)
from api.storage import RunFileStore, SnapshotStore
from api.studio import routes as studio
from runyard import __version__
from scheduler.clusters import apply_config_file
from scheduler.db import make_engine, migrate, session_scope
from scheduler.models import TokenCreate
from scheduler.settings import Settings
from scheduler.tokens import ensure_token


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url)
        migrate(engine)
        if settings.clusters_file:
            with session_scope(engine) as db:
                apply_config_file(db, settings.clusters_file)
        register_bootstrap_tokens(engine, settings)
        services = Services(
            settings=settings,
            engine=engine,
            redis=redis.Redis.from_url(settings.redis_url),
            aredis=redis.asyncio.Redis.from_url(settings.redis_url),
            snapshots=SnapshotStore(settings.snapshots_dir),
            files=RunFileStore(settings.run_files_dir),
            submit_limiter=SubmitLimiter(settings.redis_url, settings.submit_rate_limit),
        )
        app.state.services = services
        registry.register(RunyardCollector(services))
        yield
        await services.aredis.aclose()
        services.redis.close()
        engine.dispose()

    app = FastAPI(
        title="Runyard",
        version=__version__,
        description="Queue ML training runs on named compute clusters.",
        lifespan=lifespan,
        openapi_url=None,  # served below, behind a token like everything else
        docs_url=None,  # Swagger UI loads its assets from a CDN; Runyard serves no CDN pages
        redoc_url=None,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, settings=settings)
    api = APIRouter(prefix="/api/v1")
    for module in (clusters, runs, tracking, snapshots, experiments, workers, tokens, audit):
        api.include_router(module.router)
    api.include_router(session.router)
    app.include_router(api)
    app.include_router(health.router)
    registry = CollectorRegistry()

    @app.get("/metrics", include_in_schema=False, dependencies=[ALLOW.read])
    def metrics() -> Response:
        """Prometheus exposition (see docs/operations.md for the series)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[ALLOW.self])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    studio.install(app, settings.studio_frame_ancestors)
    check_every_route_guarded(app, public=studio.PUBLIC_PATHS)
    return app


def register_bootstrap_tokens(engine: Engine, settings: Settings) -> None:
    """Tokens a deployment hands in through its secrets (compose, Helm): known from the
    first request on, without anyone having to run `runyard token create` first."""
    wanted = [
        (settings.bootstrap_admin_token, TokenCreate(name="bootstrap-admin", role="admin")),
        (
            settings.bootstrap_worker_token,
            TokenCreate(name="bootstrap-worker", role="worker", clusters=["*"]),
        ),
    ]
    for secret, spec in wanted:
        if secret is None:
            continue
        with Session(engine) as db:
            try:
                ensure_token(db, spec, secret.get_secret_value())
                db.commit()
            except IntegrityError:
                db.rollback()  # another API replica starting at once registered it first
