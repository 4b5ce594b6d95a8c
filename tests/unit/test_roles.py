"""Roles (``protocol.roles``): a token is created with one of ROLES; a run's own token has
the one role nobody can create."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocol.roles import READERS, ROLES, Role
from store.models import TokenCreate


@pytest.mark.parametrize("role", list(Role))
def test_a_token_is_created_with_exactly_the_roles_listed(role: Role) -> None:
    clusters = ["*"] if role == Role.WORKER else []
    if role in ROLES:
        assert TokenCreate(name="t", role=role.value, clusters=clusters).role == role.value
    else:
        with pytest.raises(ValidationError, match="'admin', 'member', 'viewer' or 'worker'"):
            TokenCreate(name="t", role=role.value, clusters=clusters)


def test_readers_are_the_people_roles() -> None:
    assert set(ROLES) - READERS == {Role.WORKER}
