"""Name rules and the timestamp columns every table shares.

Names are checked where they enter (a submitted spec, a created cluster or token), so a bad
one is refused with a reason instead of failing deep inside the database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime
from sqlmodel import Field

CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def optional_timestamp(**kwargs: Any) -> Any:
    """A timezone-aware column that stays NULL until the moment it records happens."""
    return Field(default=None, sa_column=Column(DateTime(timezone=True), **kwargs))


def creation_timestamp(**kwargs: Any) -> Any:
    """A timezone-aware column set to now when the row is made."""
    return Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, **kwargs),
    )


def check_cluster_name(name: str) -> str:
    if not CLUSTER_NAME.match(name):
        raise ValueError(
            "cluster names are 2-32 characters: lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return name


def check_experiment_name(name: str) -> str:
    if not EXPERIMENT_NAME.match(name):
        raise ValueError(
            "experiment names are 1-255 characters: letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return name


def check_token_name(name: str) -> str:
    if not TOKEN_NAME.match(name):
        raise ValueError("token names are 1-64 characters: letters, digits, '_', '.', '@' and '-'")
    return name
