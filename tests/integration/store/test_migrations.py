"""Schema migrations (``store/migrations``, applied by ``store.db.migrate``): every table is
created, and migrating again keeps the data."""

from __future__ import annotations

import sqlalchemy
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlmodel import Session

from store import clusters
from store.db import MIGRATIONS, migrate
from tests.support.database import make_cluster

TABLES = {
    "alembic_version",
    "cluster",
    "experiment",
    "run",
    "runlog",
    "runfile",
    "metric",
    "metricpoint",
    "runtag",
    "runproperty",
    "apitoken",
    "auditevent",
    "metricrollup",
}


def test_migration_creates_every_table(engine: Engine) -> None:
    tables = set(sqlalchemy.inspect(engine).get_table_names())

    assert tables >= TABLES
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
        assert versions.all() == [head]


def test_migrating_twice_is_harmless_and_keeps_the_data(engine: Engine) -> None:
    with Session(engine) as session:
        make_cluster(session, "kept")

    migrate(engine)

    assert set(sqlalchemy.inspect(engine).get_table_names()) >= TABLES
    with Session(engine) as session:
        assert clusters.get_cluster(session, "kept").nodes == 1
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
