"""Fixtures of the store tests: each test runs on a freshly migrated SQLite file and a freshly
migrated PostgreSQL database (``database_url``), with the real session-scoped Redis server,
flushed at the start of every test.

Services never commit; tests commit where another session (the ingest, a re-read) must see
the change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine
from sqlmodel import Session

from protocol.celery_app import make_celery
from scheduler.ingest import Ingest
from store.db import make_engine, migrate
from tests.support.database import make_cluster, queue_run
from tests.support.services import RedisServer


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A freshly migrated database of each kind."""
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@pytest.fixture
def client(redis_service: RedisServer) -> Iterator[redis.Redis]:
    """The shared Redis server, emptied for this test."""
    client = redis.Redis.from_url(redis_service.url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def celery(redis_service: RedisServer) -> Iterator[Celery]:
    app = make_celery(redis_service.url)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def ingest(engine: Engine, client: redis.Redis) -> Ingest:
    consumer = Ingest(engine, client, "test-consumer")
    consumer.ensure_group()
    return consumer


@pytest.fixture
def queued_run(session: Session) -> str:
    make_cluster(session)
    return queue_run(session)
