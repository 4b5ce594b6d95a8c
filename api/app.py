"""The FastAPI application factory."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr
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
    environment_builds,
    environments,
    experiments,
    health,
    interactive,
    run_files,
    run_logs,
    runs,
    session,
    snapshots,
    tokens,
    tracking,
    usage,
    workers,
)
from api.storage import RunFileStore, SnapshotStore
from api.studio import routes as studio
from protocol.roles import Role
from protocol.settings import Settings
from runyard import __version__
from store import audit as audit_log
from store.clusters import apply_config_file
from store.db import make_engine, migrate, session_scope
from store.models import TokenCreate, check_cluster_name
from store.tokens import Actor, ensure_token, live_bootstrap_tokens, revoke

log = logging.getLogger(__name__)


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
            submit_limiter=SubmitLimiter(
                settings.redis_url, settings.submit_rate_limit, settings.array_run_rate_limit
            ),
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
    routers = (
        clusters,
        runs,
        interactive,
        environment_builds,
        run_logs,
        run_files,
        tracking,
        snapshots,
        experiments,
        environments,
        workers,
        tokens,
        audit,
        usage,
    )
    for module in routers:
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


POOL_TOKEN_PREFIX = "RUNYARD_BOOTSTRAP_WORKER_TOKEN_"


@dataclass(frozen=True)
class WorkerPool:
    """A pool of workers a deployment starts (a compose service, a Helm worker Deployment),
    and the token its workers present: bound to the pool's clusters and nothing else."""

    name: str
    clusters: list[str]
    token: SecretStr

    @property
    def token_name(self) -> str:
        return f"bootstrap-worker-{self.name}"


def pool_token_variable(pool: str) -> str:
    """Where a pool's token is read from: RUNYARD_BOOTSTRAP_WORKER_TOKEN_<POOL>."""
    return POOL_TOKEN_PREFIX + pool.upper().replace("-", "_")


def bootstrap_worker_pools(spec: str, environ: Mapping[str, str]) -> list[WorkerPool]:
    """The pools of ``RUNYARD_BOOTSTRAP_WORKER_TOKENS`` ("cpu=cpu gpu=gpu,gpu-big"), each
    with its token from its own variable. Anything unclear stops the API at start: a worker
    token bound to the wrong clusters must never be registered quietly."""
    pools: dict[str, WorkerPool] = {}
    for entry in re.split(r"[\s;]+", spec.strip()):
        if not entry:
            continue
        name, _, bound = entry.partition("=")
        clusters = [c for c in bound.split(",") if c]
        if not name or not clusters:
            raise ValueError(
                f"RUNYARD_BOOTSTRAP_WORKER_TOKENS: {entry!r} is not pool=cluster[,cluster...]"
            )
        try:
            check_cluster_name(name)  # pool names follow the rule of cluster names
        except ValueError as exc:
            raise ValueError(f"RUNYARD_BOOTSTRAP_WORKER_TOKENS: pool {name!r}: {exc}") from None
        if name in pools:
            raise ValueError(f"RUNYARD_BOOTSTRAP_WORKER_TOKENS: pool {name!r} is named twice")
        variable = pool_token_variable(name)
        token = environ.get(variable, "")
        if not token:
            raise ValueError(f"worker pool {name!r} has no token: set {variable}")
        try:
            checked = TokenCreate(
                name=f"bootstrap-worker-{name}", role=Role.WORKER, clusters=clusters
            )
        except ValueError as exc:
            raise ValueError(f"RUNYARD_BOOTSTRAP_WORKER_TOKENS: pool {name!r}: {exc}") from None
        pools[name] = WorkerPool(name=name, clusters=checked.clusters, token=SecretStr(token))
    return list(pools.values())


def register_bootstrap_tokens(
    engine: Engine, settings: Settings, environ: Mapping[str, str] | None = None
) -> None:
    """Tokens a deployment hands in through its secrets (compose, Helm): known from the
    first request on, without anyone having to run `runyard token create` first."""
    pools = bootstrap_worker_pools(
        settings.bootstrap_worker_tokens, os.environ if environ is None else environ
    )
    wanted = [
        (settings.bootstrap_admin_token, TokenCreate(name="bootstrap-admin", role=Role.ADMIN)),
        (
            settings.bootstrap_worker_token,
            TokenCreate(name="bootstrap-worker", role=Role.WORKER, clusters=["*"]),
        ),
        *(
            (
                pool.token,
                TokenCreate(name=pool.token_name, role=Role.WORKER, clusters=pool.clusters),
            )
            for pool in pools
        ),
    ]
    given = [(secret.get_secret_value(), spec) for secret, spec in wanted if secret is not None]
    # One secret for two of them would register only the first: a pool's workers would then
    # hold, say, the admin token. Refuse instead.
    seen: dict[str, str] = {}
    for secret, spec in given:
        if secret in seen:
            raise ValueError(f"the bootstrap tokens {seen[secret]} and {spec.name} are the same")
        seen[secret] = spec.name
    for secret, spec in given:
        with Session(engine) as db:
            try:
                ensure_token(db, spec, secret)
                db.commit()
            except IntegrityError:
                db.rollback()  # another API replica starting at once registered it first
    if pools and settings.bootstrap_worker_token is None:
        retire_the_every_cluster_token(engine)


def retire_the_every_cluster_token(engine: Engine) -> None:
    """Worker pools replace the bootstrap worker token bound to every cluster. One that an
    earlier deployment registered is revoked: whoever once read it (a run, say) must not
    keep a token that serves every cluster."""
    with Session(engine) as db:
        for token in live_bootstrap_tokens(db, "bootstrap-worker"):
            revoke(db, token.id)
            audit_log.record(
                db,
                Actor(name="bootstrap", role=Role.ADMIN),
                "token.revoke",
                token.id,
                name=token.name,
                reason="replaced by per-pool worker tokens (RUNYARD_BOOTSTRAP_WORKER_TOKENS)",
            )
            log.warning("revoked %s (bootstrap-worker, every cluster): pools replace it", token.id)
        db.commit()
