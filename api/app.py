"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api import errors
from api.deps import Services
from api.metrics import RunyardCollector
from api.routes import clusters, experiments, health, runs, snapshots, tracking, workers
from api.storage import RunFileStore, SnapshotStore
from runyard import __version__
from scheduler.clusters import apply_config_file
from scheduler.db import make_engine, migrate, session_scope
from scheduler.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url)
        migrate(engine)
        if settings.clusters_file:
            with session_scope(engine) as session:
                apply_config_file(session, settings.clusters_file)
        services = Services(
            settings=settings,
            engine=engine,
            redis=redis.Redis.from_url(settings.redis_url),
            aredis=redis.asyncio.Redis.from_url(settings.redis_url),
            snapshots=SnapshotStore(settings.snapshots_dir),
            files=RunFileStore(settings.run_files_dir),
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
    )
    errors.install(app)
    api = APIRouter(prefix="/api/v1")
    for module in (clusters, runs, tracking, snapshots, experiments, workers):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    registry = CollectorRegistry()

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition (see docs/operations.md for the series)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
