"""Keyset pages: every listing reads one page along an index in its own order, and hands
back an opaque cursor naming the last row it gave, so the next page starts right after it
(no offset to skip over, no count of the whole history).

A cursor is the list's name, the section of the list it stopped in (a cluster's runs are
the runs handed to a worker, then the waiting ones, then the active ones) and the sort key
of the last row, as URL-safe base64 of JSON. It is opaque to clients: they send it back
as they got it, and one that does not decode to a cursor of this list is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, tuple_
from sqlmodel import Session, select

from runyard.errors import InvalidInput
from store.db import as_utc

DEFAULT_PAGE = 100
MAX_PAGE = 500


@dataclass(frozen=True)
class Key:
    """One column of a list's order: the SQL expression, its direction, and what type its
    values have (a cursor's values are checked against it)."""

    expression: Any
    kind: type
    descending: bool = False


def encode(name: str, section: int, values: Sequence[Any]) -> str:
    """The cursor after a row whose sort key is ``values``, in ``section`` of list ``name``."""
    wire = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps([name, section, *wire], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(name: str, cursor: str, sections: Sequence[Sequence[Key]]) -> tuple[int, list[Any]]:
    """The section and sort key a cursor of list ``name`` names; ``InvalidInput`` saying
    why for anything else (another list's cursor, a damaged or made-up one)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidInput("cursor is not one this service gave out", field="cursor") from None
    if not isinstance(data, list) or len(data) < 2 or data[0] != name:
        raise InvalidInput(f"cursor is not a cursor of the {name} list", field="cursor")
    section = data[1]
    if (
        not isinstance(section, int)
        or isinstance(section, bool)
        or not 0 <= section < len(sections)
    ):
        raise InvalidInput("cursor names no part of this list", field="cursor")
    keys, values = sections[section], data[2:]
    if len(values) != len(keys):
        raise InvalidInput("cursor does not fit this list's order", field="cursor")
    return section, [_value(key, v) for key, v in zip(keys, values, strict=True)]


def _value(key: Key, value: Any) -> Any:
    if key.kind is datetime and isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    elif isinstance(value, key.kind) and not isinstance(value, bool):
        return value
    raise InvalidInput("cursor does not fit this list's order", field="cursor")


def key_of(row: Any, attributes: Sequence[str | Callable[[Any], Any]]) -> list[Any]:
    """The sort key of ``row``: its ``attributes`` (names, or functions of the row for a
    key that is an expression), UTC for timestamps."""
    values = [getattr(row, a) if isinstance(a, str) else a(row) for a in attributes]
    return [as_utc(v) if isinstance(v, datetime) else v for v in values]


def _bound(key: Key, value: Any) -> Any:
    return bindparam(None, value, type_=key.expression.type)


def _after(keys: Sequence[Key], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows after ``values`` in an order whose keys all run the same way: one row-value
    comparison, which both databases answer with an index range."""
    columns = tuple_(*(k.expression for k in keys))
    bounds = tuple_(*(_bound(k, v) for k, v in zip(keys, values, strict=True)))
    return columns < bounds if keys[0].descending else columns > bounds


def _ordered(keys: Sequence[Key]) -> list[Any]:
    return [k.expression.desc() if k.descending else k.expression for k in keys]


def _select(entity: Any) -> Any:
    """A select of one entity, or of a tuple of columns (a walk that needs only keys)."""
    return select(*entity) if isinstance(entity, tuple) else select(entity)


def rows_after(
    session: Session,
    entity: Any,
    where: Sequence[ColumnElement[bool]],
    keys: Sequence[Key],
    after: Sequence[Any] | None,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` rows of ``entity`` matching ``where``, in the order of ``keys``,
    after the row whose key is ``after`` (from the start for None).

    Keys that all run one way are one query. The queue's order (priority high to low,
    then oldest first) is walked a priority at a time: the highest priority at or below
    where it stopped (one index seek), its runs oldest first, then the next lower one, so
    no query ever sorts more than the rows it returns."""
    rest = keys[1:]
    if all(k.descending == keys[0].descending for k in keys):
        query = _select(entity).where(*where)
        if after is not None:
            query = query.where(_after(keys, after))
        return list(session.exec(query.order_by(*_ordered(keys)).limit(limit)))
    assert keys[0].descending and not any(k.descending for k in rest), "unsupported order"
    group = keys[0]
    rows: list[Any] = []
    if after is None:
        level = session.exec(select(func.max(group.expression)).where(*where)).one()
        rest_after: Sequence[Any] | None = None
    else:
        level, rest_after = after[0], after[1:]
    while level is not None and len(rows) < limit:
        query = _select(entity).where(*where, group.expression == _bound(group, level))
        if rest_after is not None:
            query = query.where(_after(rest, rest_after))
        rows += session.exec(query.order_by(*_ordered(rest)).limit(limit - len(rows)))
        rest_after = None
        lower = group.expression < _bound(group, level)
        level = session.exec(select(func.max(group.expression)).where(*where, lower)).one()
    return rows


def offset_rows(
    session: Session,
    entity: Any,
    where: Sequence[ColumnElement[bool]],
    keys: Sequence[Key],
    offset: int,
    limit: int,
) -> list[Any]:
    """A page by offset, in the same order (kept for clients that still send ``offset``;
    its cost grows with the offset)."""
    query = select(entity).where(*where).order_by(*_ordered(keys))
    return list(session.exec(query.offset(offset).limit(limit)))


@dataclass(frozen=True)
class Section:
    """One part of a list: the rows it holds, their order, and the attributes of a row
    that make its sort key (one per key)."""

    where: Sequence[ColumnElement[bool]]
    keys: Sequence[Key]
    attributes: Sequence[str | Callable[[Any], Any]]


@dataclass(frozen=True)
class Page:
    """Rows of one page, each with the section it came from, and the cursor of the next
    page (None at the end)."""

    rows: list[tuple[int, Any]]
    next_cursor: str | None


def read_page(
    session: Session,
    name: str,
    entity: Any,
    sections: Sequence[Section],
    *,
    limit: int,
    cursor: str | None = None,
    offset: int = 0,
) -> Page:
    """One page of list ``name`` (its ``sections`` one after the other): after ``cursor``,
    or from ``offset`` without one. One row more than asked is read, to know whether a
    next page exists (so the last page says so, instead of a next one coming back empty)."""
    want = limit + 1
    found: list[tuple[int, Any]] = []
    if cursor is not None or offset == 0:
        start, after = decode(name, cursor, [s.keys for s in sections]) if cursor else (0, None)
        for index in range(start, len(sections)):
            section = sections[index]
            rows = rows_after(
                session,
                entity,
                section.where,
                section.keys,
                after if index == start else None,
                want - len(found),
            )
            found += [(index, row) for row in rows]
            if len(found) >= want:
                break
    else:
        skip = offset
        for index, section in enumerate(sections):
            if skip:
                total = session.exec(
                    select(func.count()).select_from(entity).where(*section.where)
                ).one()
                if total <= skip:
                    skip -= total
                    continue
            rows = offset_rows(
                session, entity, section.where, section.keys, skip, want - len(found)
            )
            skip = 0
            found += [(index, row) for row in rows]
            if len(found) >= want:
                break
    if len(found) <= limit:
        return Page(rows=found, next_cursor=None)
    found = found[:limit]
    index, last = found[-1]
    section = sections[index]
    return Page(rows=found, next_cursor=encode(name, index, key_of(last, section.attributes)))
