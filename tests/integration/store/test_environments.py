"""The registered-environment store on each database: versions by name, a new one only when
the spec changed, the latest of each name listed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session

from protocol.environments import EnvironmentSpec
from runyard.errors import NotFound
from store import environments


def spec(*pip: str) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({"python": {"conda_dependencies": {"pip_packages": pip}}})


def test_versions_by_name_and_the_latest_of_each(session: Session) -> None:
    one, created = environments.register(session, "train", spec("numpy"), created_by="ann")
    assert (one.version, created, one.created_by) == (1, True, "ann")
    again, created = environments.register(session, "train", spec("numpy"), created_by="bob")
    assert (again.id, created) == (one.id, False)
    two, _ = environments.register(session, "train", spec("numpy", "pandas"), created_by="bob")
    other, _ = environments.register(session, "eval", spec(), created_by="ann")
    session.commit()
    assert [(r.name, r.version) for r in environments.list_latest(session).rows] == [
        ("eval", 1),
        ("train", 2),
    ]
    assert [r.version for r in environments.versions(session, "train").rows] == [2, 1]
    assert environments.get(session, "train", 1).spec["python"]["conda_dependencies"] == {
        "pip_packages": ["numpy"]
    }
    assert (one.spec_hash, two.spec_hash, other.spec_hash) != (None, None, None)
    assert other.spec_hash is None  # nothing to build
    assert environments.public(two).requirements == ["numpy", "pandas"]
    with pytest.raises(NotFound, match=r"environment 'train' has no version 5 \(latest: 2\)"):
        environments.get(session, "train", 5)
    with pytest.raises(NotFound, match="no environment named 'nope' is registered"):
        environments.versions(session, "nope")


@contextmanager
def another_registers_first(
    engine: Engine, session: Session, environment: EnvironmentSpec
) -> Iterator[None]:
    """While ``session`` registers ``train``: after it has read the latest version and just
    before it writes its own, another session registers ``environment`` as ``train`` and
    commits (the register that wins the race)."""
    mine = session.connection()
    waiting = [environment]

    def register_first(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if conn is mine and waiting and statement.startswith("INSERT INTO registeredenvironment"):
            with Session(engine) as other:
                environments.register(other, "train", waiting.pop(), created_by="bob")
                other.commit()

    event.listen(engine, "before_cursor_execute", register_first)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", register_first)
    assert not waiting, "the other register never ran"


def test_the_same_spec_registered_twice_at_once_is_one_version(
    engine: Engine, session: Session
) -> None:
    with another_registers_first(engine, session, spec("numpy")):
        row, created = environments.register(session, "train", spec("numpy"), created_by="ann")
    session.commit()

    assert (row.version, row.created_by, created) == (1, "bob", False)
    assert [r.version for r in environments.versions(session, "train").rows] == [1]


def test_a_different_spec_registered_at_the_same_time_becomes_the_next_version(
    engine: Engine, session: Session
) -> None:
    with another_registers_first(engine, session, spec("numpy")):
        row, created = environments.register(session, "train", spec("pandas"), created_by="ann")
    session.commit()

    assert (row.version, row.created_by, created) == (2, "ann", True)
    assert [(r.version, r.created_by) for r in environments.versions(session, "train").rows] == [
        (2, "ann"),
        (1, "bob"),
    ]
