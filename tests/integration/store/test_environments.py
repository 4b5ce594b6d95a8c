"""The registered-environment store on each database: versions by name, a new one only when
the spec changed, the latest of each name listed."""

from __future__ import annotations

import pytest
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
    assert [(r.name, r.version) for r in environments.list_latest(session)] == [
        ("eval", 1),
        ("train", 2),
    ]
    assert [r.version for r in environments.versions(session, "train")] == [2, 1]
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
