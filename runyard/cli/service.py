"""``runyard up | api | scheduler | worker``: the service's processes."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from runyard.config import redact_url
from runyard.errors import InvalidInput, ServiceUnavailable

DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="SQLite database, snapshots and run files"),
]
RedisOpt = Annotated[
    Optional[str], typer.Option("--redis-url", help="Redis for broker and streams")
]
ClustersOpt = Annotated[
    Optional[Path],
    typer.Option("--clusters-file", help="TOML file declaring clusters, applied at start"),
]


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from protocol.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@contextmanager
def _redis_errors(url: str) -> Iterator[None]:
    """Redis unreachable at start: one line, not a traceback."""
    import redis

    try:
        yield
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from None


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def up(
    host: Annotated[str, typer.Option(help="Address the API listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the API listens on")] = 8642,
    data_dir: DataDirOpt = None,
    redis_url: RedisOpt = None,
    clusters_file: ClustersOpt = None,
) -> None:
    """Run everything on this machine: API, scheduler, a worker per cluster (and Redis)."""
    from runyard.cli.local_stack import LocalStack

    _logging()
    stack = LocalStack(
        host=host,
        port=port,
        data_dir=(data_dir or Path(".runyard")).resolve(),
        redis_url=redis_url,
        clusters_file=clusters_file.resolve() if clusters_file else None,
    )
    stack.run()


def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8642,
    data_dir: DataDirOpt = None,
    redis_url: RedisOpt = None,
    clusters_file: ClustersOpt = None,
) -> None:
    """Run the REST API (uvicorn)."""
    import uvicorn

    from api.app import create_app

    settings = _settings(data_dir=data_dir, redis_url=redis_url, clusters_file=clusters_file)
    _agree_on_shards(settings.redis_url)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)


def _agree_on_shards(url: str) -> None:
    """The API's entries go to the same shards as everyone's (``agree_on_shards``). Redis
    may come up after the API, which starts without it: then the schedulers check."""
    import redis

    from protocol.streams import agree_on_shards

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        agree_on_shards(client)
    except redis.RedisError:
        pass
    finally:
        client.close()


def scheduler(
    data_dir: DataDirOpt = None,
    redis_url: RedisOpt = None,
    clusters_file: ClustersOpt = None,
) -> None:
    """Run a scheduler: ingest of worker reports, admission, watchdog. Several may run;
    one leads (a lease in Redis) and the others take over if it dies."""
    from scheduler.service import Scheduler

    _logging()
    service = Scheduler(
        _settings(data_dir=data_dir, redis_url=redis_url, clusters_file=clusters_file)
    )
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    with _redis_errors(service.settings.redis_url):
        service.run_forever()


def worker(
    ctx: typer.Context,
    cluster: Annotated[
        Optional[list[str]],
        typer.Option("--cluster", "-c", help="Cluster to serve (repeatable)"),
    ] = None,
    slots: Annotated[int, typer.Option("--slots", "-n", help="Runs at once on this worker")] = 1,
    name: Annotated[
        Optional[str], typer.Option(help="Stable worker id (default: host-pid)")
    ] = None,
    redis_url: RedisOpt = None,
    api_url: Annotated[Optional[str], typer.Option("--api-url", help="Where the API is")] = None,
    executors: Annotated[
        str,
        typer.Option(
            help="Executors this worker runs: docker, local or both (comma-separated). "
            "Give 'docker' to a worker holding the Docker socket."
        ),
    ] = "local,docker",
    gpus: Annotated[
        Optional[str],
        typer.Option(help="GPU ids of this node, split between the slots, e.g. 0,1,2,3"),
    ] = None,
    work_dir: Annotated[
        Optional[Path], typer.Option(help="Run directories and snapshot cache")
    ] = None,
    run_as: Annotated[
        Optional[str],
        typer.Option(
            "--run-as",
            help="UID[:GID] local-executor runs execute as (RUNYARD_RUN_AS; needs a root "
            "worker): they then cannot read the worker's /proc, environment or files",
        ),
    ] = None,
) -> None:
    """Serve clusters' queues: a Celery worker running up to --slots runs at once.

    `runyard worker drain ID` asks a running worker to finish its runs and take no new ones.
    """
    from protocol.environments import EXECUTORS
    from store.models import check_cluster_name
    from worker.app import run_worker

    if ctx.invoked_subcommand is not None:
        return
    if not cluster:
        raise InvalidInput("name the cluster(s) to serve: --cluster NAME")
    if slots < 1:
        raise InvalidInput("--slots must be at least 1")
    for name_ in cluster:
        try:
            check_cluster_name(name_)
        except ValueError as exc:
            raise InvalidInput(f"--cluster {name_!r}: {exc}") from exc
    _logging()
    settings = _settings(redis_url=redis_url, api_url=api_url, work_dir=work_dir, run_as=run_as)
    if settings.run_as and os.geteuid() != 0:
        raise InvalidInput("--run-as needs a worker started as root (to switch users)")
    gpu_ids = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else []
    allowed = tuple(sorted({e.strip() for e in executors.split(",") if e.strip()}))
    if not allowed or not set(allowed) <= set(EXECUTORS):
        raise InvalidInput("--executors takes docker, local or both")
    with _redis_errors(settings.redis_url):
        run_worker(settings, sorted(set(cluster)), slots, name, gpu_ids, allowed)


LOOPBACK_NAMES = ("localhost",)


def _is_loopback(address: str) -> bool:
    if address in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name, or "" (every interface)


def _flower_credentials(basic_auth_file: Path | None) -> str | None:
    """Flower's basic auth, "user:password" pairs joined by commas (as Flower reads
    FLOWER_BASIC_AUTH), from that variable or from a file of one pair a line."""
    given = os.environ.get("FLOWER_BASIC_AUTH", "")
    if basic_auth_file is not None:
        if given:
            raise InvalidInput("give FLOWER_BASIC_AUTH or --basic-auth-file, not both")
        try:
            lines = basic_auth_file.read_text().splitlines()
        except OSError as exc:
            raise InvalidInput(f"cannot read {basic_auth_file}: {exc.strerror}") from None
        pairs = [line.strip() for line in lines if line.strip()]
    else:
        pairs = [pair for pair in given.split(",") if pair]
    for pair in pairs:
        user, _, password = pair.partition(":")
        if not user or not password or "," in pair:
            raise InvalidInput("Flower's basic auth is user:password pairs, with no comma in them")
    return ",".join(pairs) or None


def flower(
    port: Annotated[int, typer.Option(help="Port Flower listens on")] = 5555,
    address: Annotated[str, typer.Option(help="Address Flower listens on")] = "127.0.0.1",
    redis_url: RedisOpt = None,
    basic_auth_file: Annotated[
        Optional[Path],
        typer.Option(
            "--basic-auth-file",
            help="File of user:password pairs (one a line) for Flower's basic auth; "
            "or set FLOWER_BASIC_AUTH=user:password",
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Serve without a password: on a loopback address only"),
    ] = False,
) -> None:
    """Run Flower on Runyard's broker: the cluster queues and the workers serving them.

    Flower needs a password (FLOWER_BASIC_AUTH or --basic-auth-file) unless --no-auth is
    given, which serves it on a loopback address only."""
    credentials = _flower_credentials(basic_auth_file)
    if no_auth:
        if credentials:
            raise InvalidInput("--no-auth and a password: give one or the other")
        if not _is_loopback(address):
            raise InvalidInput(
                f"--no-auth serves Flower on a loopback address only, not {address!r}: "
                "give it a password (FLOWER_BASIC_AUTH or --basic-auth-file)"
            )
    elif credentials is None:
        raise InvalidInput(
            "Flower needs a password: set FLOWER_BASIC_AUTH=user:password or give "
            "--basic-auth-file FILE (or --no-auth, on 127.0.0.1 only)"
        )
    elif os.environ.get("FLOWER_UNAUTHENTICATED_API"):
        raise InvalidInput("FLOWER_UNAUTHENTICATED_API opens Flower's API without a password")
    settings = _settings(redis_url=redis_url)
    # The broker URL and the password go through the environment, not argv: process
    # listings show every process's command line.
    env = {**os.environ, "CELERY_BROKER_URL": settings.redis_url}
    env.pop("FLOWER_BASIC_AUTH", None)
    if credentials:
        env["FLOWER_BASIC_AUTH"] = credentials
    command = [sys.executable, "-m", "celery", "flower", f"--port={port}", f"--address={address}"]
    os.execve(sys.executable, command, env)
