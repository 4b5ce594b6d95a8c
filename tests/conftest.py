"""Fixtures for real services: Redis, PostgreSQL, and a live Runyard stack."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy

from tests.support.services import (
    ISSUED_SECRETS,
    OLDEST_PYTHON_RELEASE,
    RedisServer,
    Stack,
    docker_engine,
    ensure_run_image,
    redis_server,
    stop_process,
    throwaway_postgres,
)


@pytest.fixture(scope="session", autouse=True)
def _own_credentials_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The SDK, the CLI and `runyard up` keep tokens in the user's credentials file
    (``$XDG_CONFIG_HOME/runyard``): tests, and what they start, never touch the real one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        yield


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with throwaway_postgres("runyard-test-pg-") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind Runyard supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runyard.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    name = f"test_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield server_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_service: RedisServer) -> Iterator[Stack]:
    """API + scheduler (SQLite) as real processes; tests start the workers they need."""
    live = Stack(root=tmp_path_factory.mktemp("stack"), redis=redis_service)
    live.start()
    try:
        yield live
    finally:
        live.stop()


class Workers:
    """Starts workers for one test and stops them after it."""

    def __init__(self, live: Stack) -> None:
        self.stack = live
        self.started: list = []

    def start(
        self,
        *clusters: str,
        slots: int = 1,
        name: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ):  # type: ignore[no-untyped-def]
        process = self.stack.start_worker(
            *clusters, slots=slots, name=name, wait=wait, env=env, prefix=prefix
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            stop_process(process)


@pytest.fixture
def workers(stack: Stack) -> Iterator[Workers]:
    started = Workers(stack)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A running Docker engine: the one already running, else one started for the session."""
    with docker_engine(tmp_path_factory.mktemp("docker")):
        yield


@pytest.fixture(scope="session")
def run_image(docker_daemon: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local image with Python to run containers from."""
    return ensure_run_image(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def oldest_python_image(docker_daemon: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local image with the oldest Python the run side supports (``OLDEST_PYTHON``)."""
    return ensure_run_image(tmp_path_factory.mktemp("image"), OLDEST_PYTHON_RELEASE)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: no log any process wrote holds a password or token it was given."""
    yield
    leaks = []
    for log in tmp_path_factory.getbasetemp().rglob("*.log"):
        text = log.read_text(errors="replace")
        leaks += [f"{log}: secret {s[:6]}..." for s in ISSUED_SECRETS if s in text]
    assert not leaks, "secrets in logs:\n" + "\n".join(leaks)
