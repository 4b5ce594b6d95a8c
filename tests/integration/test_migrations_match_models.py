"""The migrations build exactly the tables the models describe, on each database Runyard
supports: Alembic compares against ``SQLModel.metadata``, which holds only the tables of
the model modules ``store.models`` imports, so a model left out, or a migration missing
for a changed column, shows here instead of in a user's upgrade."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import store.models  # noqa: F401  (registers every table, as store/migrations/env.py does)
from store.db import make_engine, migrate


def test_a_migrated_database_differs_in_nothing_from_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()
    assert differences == []
