"""Registered environments: versions by name, as Azure's ``Environment.register`` keeps them.

Registering makes a new version only when the environment differs from the latest one of
its name (so registering the same thing twice is one version, as in Azure); the comparison
ignores how the JSON happened to be spelt (a ``null``, an empty list, key order). Every
version is checked as a run's environment is, and its packages as a build reads them, so
what could never build is refused here rather than at the first run.

Registers may race (two people, two API replicas): a version is written only if it is still
free, and the one that finds it taken reads again, so the same spec registered twice at once
is still one version, and a different one becomes the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from protocol.build_specs import build_spec
from protocol.environments import EnvironmentSpec
from runyard.errors import Conflict, InvalidInput, NotFound
from store.db import as_utc, insert_ignoring
from store.models import (
    RegisteredEnvironment,
    RegisteredEnvironmentPublic,
    check_environment_name,
)
from store.paging import MAX_PAGE, Key, Section, read_page

_ATTEMPTS = 5  # registers of other specs that may win the race in a row before giving up


def register(
    session: Session, name: str, spec: EnvironmentSpec, created_by: str | None
) -> tuple[RegisteredEnvironment, bool]:
    """The version ``spec`` is registered as, and whether it is a new one."""
    try:
        check_environment_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="name") from None
    if spec.name is not None and spec.name != name:
        raise InvalidInput(
            f"the environment is named {spec.name!r} but is registered as {name!r}", field="name"
        )
    stored = {**spec.model_dump(exclude_unset=True), "name": name}
    stored.pop("version", None)  # versions are numbered here
    found = build_spec(stored)  # BadRequirement (a 422) for a package no build could install
    spec_hash = found.digest() if found is not None else None
    for _ in range(_ATTEMPTS):
        latest = _latest(session, name)
        if latest is not None and _canonical(latest.spec) == _canonical(stored):
            return latest, False
        version = latest.version + 1 if latest is not None else 1
        row = RegisteredEnvironment(
            name=name, version=version, spec=stored, spec_hash=spec_hash, created_by=created_by
        )
        inserted = _insert_unless_taken(session, row)
        if inserted is not None:
            return inserted, True
        # Another register took this version since the read above (and has committed):
        # look again, so the same spec gets that version and a different one the next.
    raise Conflict(f"environment {name!r} kept getting new versions while registering; try again")


def get(session: Session, name: str, version: int | None = None) -> RegisteredEnvironment:
    """``version`` of ``name``; none: its latest."""
    if version is None:
        row = _latest(session, name)
    else:
        row = session.exec(
            select(RegisteredEnvironment).where(
                RegisteredEnvironment.name == name, RegisteredEnvironment.version == version
            )
        ).first()
    if row is not None:
        return row
    latest = _latest(session, name) if version is not None else None
    if latest is None:
        raise NotFound(f"no environment named {name!r} is registered")
    raise NotFound(f"environment {name!r} has no version {version} (latest: {latest.version})")


@dataclass(frozen=True)
class EnvironmentPage:
    rows: list[RegisteredEnvironment]
    count: int
    next_cursor: str | None


def versions(
    session: Session,
    name: str,
    *,
    limit: int = MAX_PAGE,
    cursor: str | None = None,
    offset: int = 0,
) -> EnvironmentPage:
    """A page of the versions of ``name``, newest first (``store.paging``)."""
    where = [RegisteredEnvironment.name == name]
    total = session.exec(
        select(func.count()).select_from(RegisteredEnvironment).where(*where)
    ).one()
    if not total:
        raise NotFound(f"no environment named {name!r} is registered")
    keys = (Key(col(RegisteredEnvironment.version), int, descending=True),)
    page = read_page(
        session,
        f"environment-versions:{name}",
        RegisteredEnvironment,
        [Section(where, keys, ("version",))],
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    return EnvironmentPage([row for _, row in page.rows], total, page.next_cursor)


def list_latest(
    session: Session, *, limit: int = MAX_PAGE, cursor: str | None = None, offset: int = 0
) -> EnvironmentPage:
    """A page of the latest version of each registered environment, by name: read along
    the (name, version) unique index, each row checked to be its name's highest version."""
    other = aliased(RegisteredEnvironment)
    newest = (
        select(func.max(other.version))
        .where(other.name == RegisteredEnvironment.name)
        .correlate(RegisteredEnvironment)
        .scalar_subquery()
    )
    where = [RegisteredEnvironment.version == newest]
    names = select(func.count(func.distinct(RegisteredEnvironment.name)))
    page = read_page(
        session,
        "environments",
        RegisteredEnvironment,
        [Section(where, (Key(col(RegisteredEnvironment.name), str),), ("name",))],
        limit=limit,
        cursor=cursor,
        offset=offset,
    )
    return EnvironmentPage(
        [row for _, row in page.rows], session.exec(names).one(), page.next_cursor
    )


def public(row: RegisteredEnvironment) -> RegisteredEnvironmentPublic:
    """As the API shows it: the spec a run would carry (its version in it) and what a build
    of it installs."""
    found = build_spec(row.spec)
    return RegisteredEnvironmentPublic(
        name=row.name,
        version=row.version,
        spec={**row.spec, "name": row.name, "version": str(row.version)},
        spec_hash=row.spec_hash,
        requirements=list(found.requirements) if found is not None else [],
        python_version=found.python_version if found is not None else None,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
    )


def _insert_unless_taken(
    session: Session, row: RegisteredEnvironment
) -> RegisteredEnvironment | None:
    """``row`` as inserted, or None when its name and version exist already. A conflict
    leaves the transaction usable, where a failed INSERT would not (PostgreSQL aborts the
    transaction; on SQLite's driver, releasing a savepoint can commit it)."""
    statement = (
        insert_ignoring(session, RegisteredEnvironment)
        .values(**row.model_dump(exclude={"id"}))
        .on_conflict_do_nothing(index_elements=["name", "version"])
        .returning(col(RegisteredEnvironment.id))
    )
    inserted = session.execute(statement).scalar_one_or_none()
    return None if inserted is None else session.get(RegisteredEnvironment, inserted)


def _latest(session: Session, name: str) -> RegisteredEnvironment | None:
    return session.exec(
        select(RegisteredEnvironment)
        .where(RegisteredEnvironment.name == name)
        .order_by(col(RegisteredEnvironment.version).desc())
        .limit(1)
    ).first()


def _canonical(spec: dict[str, Any]) -> Any:
    """What the spec says, whatever the spelling: defaults, nulls and empty parts dropped."""
    dumped = EnvironmentSpec.model_validate(spec).model_dump(exclude_defaults=True)
    dumped.pop("version", None)
    return _pruned(dumped)


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, {}, [])}
    return value
