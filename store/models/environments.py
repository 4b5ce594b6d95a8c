"""Registered environments: an ``Environment`` stored under its name, one row per version.

A version is the environment JSON a run carries (``protocol.environments.EnvironmentSpec``),
with the hash of what a build of it is made of (``BuildSpec.digest``; none when nothing is
built), so the same packages can be told apart from a changed one at a glance.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from store.models.names import creation_timestamp

ENVIRONMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def check_environment_name(name: str) -> str:
    if not ENVIRONMENT_NAME.match(name):
        raise ValueError(
            "environment names are 1-255 characters: letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return name


class RegisteredEnvironment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=255)
    version: int  # 1, 2, ...: a new one only when the spec differs from the latest
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    spec_hash: str | None = Field(default=None, max_length=64, index=True)
    created_at: datetime = creation_timestamp()
    created_by: str | None = Field(default=None, max_length=64)


class RegisteredEnvironmentPublic(SQLModel):
    name: str
    version: int
    spec: dict[str, Any]  # the environment JSON, its name and version ("3") in it
    spec_hash: str | None  # BuildSpec.digest(): what a build of it is made of
    requirements: list[str]  # normalized, sorted: what a build installs
    python_version: str | None
    created_at: datetime
    created_by: str | None


class RegisteredEnvironmentsPublic(SQLModel):
    data: list[RegisteredEnvironmentPublic]
    count: int
    next_cursor: str | None = None  # of the next page (store.paging); None at the end
