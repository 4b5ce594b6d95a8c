"""Who calls the API: the role every token carries, spelled once for the API's permission
rules, the token store, the bootstrap tokens and the CLI."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    ADMIN = "admin"  # everything: clusters, tokens, workers and the audit log too
    MEMBER = "member"  # reads; submits, cancels and reorders runs
    VIEWER = "viewer"  # reads
    WORKER = "worker"  # a worker: bound to the clusters it serves
    RUN = "run"  # a run's own token, derived for one attempt: never created by hand


# The roles a token is created with (a run token is derived, never created).
ROLES = (Role.ADMIN, Role.MEMBER, Role.VIEWER, Role.WORKER)
# The same, as the type of a request's field: plain strings, checked by pydantic.
TokenRole = Literal[tuple(role.value for role in ROLES)]  # type: ignore[valid-type]
# Roles that read everything.
READERS = frozenset({Role.ADMIN, Role.MEMBER, Role.VIEWER})
