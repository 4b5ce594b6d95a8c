"""Engine and session factory shared by the API and the scheduler, and schema migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the API read while the scheduler writes; several processes share it.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # Under WAL, NORMAL is durable against a process crash (a commit is in the WAL
            # before it returns); a power cut may lose the last commits, never corrupt.
            cur.execute("PRAGMA synchronous=NORMAL")
            # 64 MiB of page cache (the default is 2 MiB): the points' indexes of a busy
            # ingest stay in memory instead of being read back between batches.
            cur.execute("PRAGMA cache_size=-65536")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def ping(engine: Engine) -> None:
    """Raise unless the database answers a trivial query (readiness probes)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe from several processes)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_ignoring(session: Session, table: Any) -> Any:
    """The dialect's INSERT, which offers ``on_conflict_do_nothing`` (SQLite and PostgreSQL)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything Runyard stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
