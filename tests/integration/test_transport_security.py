"""Redis and PostgreSQL behind passwords and TLS, configured by URL alone; secrets stay
out of every log and error."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from runyard.config import redact_url
from store.db import make_engine
from tests.support.runs import submit, write
from tests.support.services import (
    ADMIN_TOKEN,
    RedisServer,
    Stack,
    TlsFiles,
    free_port,
    postgres_server,
    runyard,
    unique,
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def pg_password() -> str:
    return "pg-" + secrets.token_hex(10)


@pytest.fixture(scope="module")
def tls_postgres(tls: TlsFiles, pg_password: str) -> Iterator[str]:
    # Not under tmp_path: pytest's folders are 0700 root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="runyard-test-pgtls-"))
    folder.chmod(0o755)
    try:
        with postgres_server(folder / "server", tls=tls, password=pg_password) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis-tls"), tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_database_url_carries_password_and_tls(tls_postgres: str, pg_password: str) -> None:
    engine = make_engine(tls_postgres)
    with engine.connect() as connection:
        encrypted = connection.execute(
            sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ).scalar()
    engine.dispose()
    assert encrypted is True
    assert pg_password not in redact_url(tls_postgres)


def test_a_whole_stack_over_tls_redis_and_tls_postgres(
    tmp_path: Path, tls_redis: RedisServer, tls_postgres: str, pg_password: str
) -> None:
    assert tls_redis.url.startswith("rediss://")
    stack = Stack(root=tmp_path / "stack", redis=tls_redis, database_url=tls_postgres)
    stack.start()
    try:
        cluster = unique("tls")
        stack.client().create_cluster(cluster, nodes=1)
        stack.start_worker(cluster)
        folder = write(
            tmp_path / "src",
            {"train.py": "from runyard.core import Run\nRun.get_context().log('acc', 0.9)\n"},
        )
        run = submit(stack.url, folder, "train.py", cluster)
        run.wait_for_completion()
        assert run.get_status() == "Completed"
        assert run.get_metrics()["acc"] == 0.9
    finally:
        stack.stop()
    logs = stack.log_files()
    assert logs, "the stack wrote no log"
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in (tls_redis.password, pg_password, ADMIN_TOKEN):
            assert secret not in text, f"a secret appears in {log.name}"


def test_an_unreachable_redis_error_names_no_password(tmp_path: Path) -> None:
    url = f"redis://:hunter2-{secrets.token_hex(4)}@127.0.0.1:{free_port()}/0"
    process = subprocess.run(
        runyard("scheduler", "--data-dir", str(tmp_path)),
        env={"RUNYARD_REDIS_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode != 0
    assert "hunter2" not in process.stderr + process.stdout
    assert "cannot reach Redis at redis://:***@127.0.0.1" in process.stderr


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("rediss://user:pw@h:6380/0?ssl_cert_reqs=required") == (
        "rediss://user:***@h:6380/0?ssl_cert_reqs=required"
    )
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("postgresql+psycopg://u:s3cr%40t@db/x") == "postgresql+psycopg://u:***@db/x"
