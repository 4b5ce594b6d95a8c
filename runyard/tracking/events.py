"""Logging calls turned into small JSON-able events, checked against limits first.

An event is a dict with short keys, because a training loop may log millions of them:
``r`` target run id, ``k`` kind, ``n`` name, ``v`` value, ``d`` description, ``t`` time,
``s`` the step a scalar was logged at (``log(..., step=5)``).
Kinds: ``m`` scalar (``log``), ``l`` list, ``w`` row, ``b`` table, ``i`` image, ``tag``,
``prop``, ``file``, ``child``, ``status``; ``sync`` (channel only) asks the worker to
confirm that everything before it is stored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set

from runyard.errors import Conflict, InvalidInput, LimitExceeded

SCALAR, LIST, ROW, TABLE, IMAGE = "m", "l", "w", "b", "i"
TAG, PROPERTY, FILE, CHILD, STATUS = "tag", "prop", "file", "child", "status"
SYNC = "sync"
NAME = "name"  # the run's display name
MAX_DISPLAY_NAME = 255
MAX_STEP = 2**53  # steps are stored as integers that JSON and doubles both hold exactly
METRIC_KINDS = (SCALAR, LIST, ROW, TABLE, IMAGE)
# The name each metric kind is stored and shown under (the API's "kind"), and back.
KIND_NAMES = {SCALAR: "scalar", LIST: "list", ROW: "row", TABLE: "table", IMAGE: "image"}
KIND_CODES = {name: code for code, name in KIND_NAMES.items()}
# Stored names of the series of single values (charted, and shown as table columns)...
SINGLE_VALUE_KINDS = (KIND_NAMES[SCALAR], KIND_NAMES[LIST])
# ...and of the metrics made of named columns.
COLUMN_KINDS = (KIND_NAMES[ROW], KIND_NAMES[TABLE])


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    """Per-run limits, in the spirit of Azure ML's; each overridable by RUNYARD_LIMIT_*."""

    metric_names: int = 1000
    columns: int = 50
    name_length: int = 255
    string_length: int = 4096
    values_per_call: int = 1_000_000
    tags: int = 100
    properties: int = 100

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(
            **{
                f: _env_int(f"RUNYARD_LIMIT_{f.upper()}", getattr(cls, f))
                for f in (
                    "metric_names",
                    "columns",
                    "name_length",
                    "string_length",
                    "values_per_call",
                    "tags",
                    "properties",
                )
            }
        )


@dataclass
class RunLimits:
    """What one run has used so far, so limits are checked in the process, at call time."""

    limits: Limits = field(default_factory=Limits.from_env)
    metric_kinds: Dict[str, str] = field(default_factory=dict)
    tags: Set[str] = field(default_factory=set)
    properties: Dict[str, str] = field(default_factory=dict)

    def metric(self, name: Any, kind: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"metric name must be a non-empty string, not {name!r}")
        known = self.metric_kinds.get(name)
        if known is None:
            if len(name) > self.limits.name_length:
                raise LimitExceeded(
                    f"metric name {name[:40]!r}... is over {self.limits.name_length} characters"
                )
            if len(self.metric_kinds) >= self.limits.metric_names:
                raise LimitExceeded(
                    f"metric {name!r} would be distinct metric name number "
                    f"{len(self.metric_kinds) + 1}; the limit is "
                    f"{self.limits.metric_names} per run"
                )
            self.metric_kinds[name] = kind
        elif not compatible(known, kind):
            raise InvalidInput(
                f"metric {name!r} was logged as a {KIND_NAMES[known]}; it cannot "
                f"also be a {KIND_NAMES[kind]}"
            )

    def tag(self, key: Any, value: Any) -> Optional[str]:
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"tag key must be a non-empty string, not {key!r}")
        if len(key) > self.limits.name_length:
            raise LimitExceeded(
                f"tag key {key[:40]!r}... is over {self.limits.name_length} characters"
            )
        text = None if value is None else str(value)  # Azure keeps a valueless tag as None
        if text is not None and len(text) > self.limits.string_length:
            raise LimitExceeded(f"tag {key!r}: value over {self.limits.string_length} characters")
        if key not in self.tags and len(self.tags) >= self.limits.tags:
            raise LimitExceeded(
                f"tag {key!r} would be tag number {len(self.tags) + 1}; the limit "
                f"is {self.limits.tags} per run"
            )
        self.tags.add(key)
        return text

    def properties_(self, values: Dict[Any, Any]) -> Dict[str, str]:
        if not isinstance(values, dict):
            raise InvalidInput("add_properties() takes a dict")
        clean = {}
        for key, value in values.items():
            text = str(value)
            if not isinstance(key, str) or not key:
                raise InvalidInput(f"property key must be a non-empty string, not {key!r}")
            if key in self.properties and self.properties[key] != text:
                raise Conflict(
                    f"property {key!r} is already {self.properties[key]!r}; "
                    "properties cannot change"
                )
            clean[key] = text
        new = [k for k in clean if k not in self.properties]
        if len(self.properties) + len(new) > self.limits.properties:
            raise LimitExceeded(f"more than {self.limits.properties} properties per run")
        self.properties.update(clean)
        return clean


_COMPATIBLE = {
    SCALAR: frozenset((SCALAR, LIST)),
    LIST: frozenset((SCALAR, LIST)),
    ROW: frozenset((ROW, TABLE)),
    TABLE: frozenset((ROW, TABLE)),
    IMAGE: frozenset((IMAGE,)),
}


def compatible(first: str, then: str) -> bool:
    """A name logged with log() may go on with log_list() and vice versa (both a vector);
    a row may follow a table of the same columns; anything else keeps its first kind."""
    return then in _COMPATIBLE[first]


def scalar_value(value: Any, limits: Limits) -> Any:
    """Numbers (NaN and infinities included), bools and strings are stored as logged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        if len(value) > limits.string_length:
            raise LimitExceeded(f"string value over {limits.string_length} characters")
        return value
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return scalar_value(item(), limits)
        except (TypeError, ValueError):
            pass
    raise InvalidInput(f"cannot log a {type(value).__name__}; log numbers or strings")


def list_values(values: Iterable[Any], limits: Limits) -> List[Any]:
    if isinstance(values, (str, bytes)):
        raise InvalidInput("log_list() takes an iterable of values, not a string")
    out: List[Any] = []
    for value in values:
        if len(out) >= limits.values_per_call:
            raise LimitExceeded(f"more than {limits.values_per_call} values in one call")
        out.append(scalar_value(value, limits))
    return out


def row_values(values: Dict[str, Any], limits: Limits) -> Dict[str, Any]:
    if not values:
        raise InvalidInput("log_row() needs at least one column, e.g. log_row('r', x=1, y=2)")
    if len(values) > limits.columns:
        raise LimitExceeded(f"{len(values)} columns; the limit is {limits.columns} per row")
    return {str(k): scalar_value(v, limits) for k, v in values.items()}


def table_values(value: Any, limits: Limits) -> Dict[str, List[Any]]:
    """A dict of columns, or a pandas DataFrame."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, dict):
        value = to_dict(orient="list")
    if not isinstance(value, dict) or not value:
        raise InvalidInput("log_table() takes a dict of columns (or a pandas DataFrame)")
    if len(value) > limits.columns:
        raise LimitExceeded(f"{len(value)} columns; the limit is {limits.columns} per table")
    columns = {
        str(k): list_values(v if not isinstance(v, (int, float, str)) else [v], limits)
        for k, v in value.items()
    }
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InvalidInput(f"log_table() columns differ in length: {sorted(lengths)}")
    return columns


def _is_value(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _is_values(value: Any) -> bool:
    return isinstance(value, list) and all(_is_value(v) for v in value)


_SHAPES = {
    SCALAR: _is_value,
    LIST: _is_values,
    ROW: lambda v: (
        isinstance(v, dict) and all(isinstance(k, str) and _is_value(x) for k, x in v.items())
    ),
    TABLE: lambda v: (
        isinstance(v, dict) and all(isinstance(k, str) and _is_values(x) for k, x in v.items())
    ),
    IMAGE: lambda v: isinstance(v, str),
    TAG: _is_value,
    PROPERTY: lambda v: (
        isinstance(v, dict) and all(isinstance(k, str) and _is_value(x) for k, x in v.items())
    ),
    CHILD: lambda v: True,
    STATUS: lambda v: isinstance(v, str),
    NAME: lambda v: isinstance(v, str) and 0 < len(v) <= MAX_DISPLAY_NAME,
    FILE: lambda v: True,
    SYNC: lambda v: isinstance(v, str) and 0 < len(v) <= 64 and v.isascii() and v.isalnum(),
}


_SCALAR_TYPES = (float, int, str, bool, type(None))
_SCALAR_KEYS = frozenset(("r", "k", "n", "v", "t"))


def well_formed(event: Any) -> bool:
    """An event as the SDK writes it; anything else (a forged or corrupt line) is refused."""
    if (
        type(event) is dict
        and event.get("k") == SCALAR
        and event.keys() <= _SCALAR_KEYS
        and type(event.get("r")) is str
        and type(event.get("n")) is str
        and type(event.get("v")) in _SCALAR_TYPES
        and type(event.get("t", 0.0)) in (float, int)
    ):
        return True  # what log() writes millions of times; anything else takes the walk
    if not isinstance(event, dict) or not isinstance(event.get("r"), str):
        return False
    kind = event.get("k")
    if not isinstance(kind, str) or kind not in _SHAPES:
        return False
    if (kind in METRIC_KINDS or kind == TAG) and not isinstance(event.get("n"), str):
        return False
    if kind == CHILD and not isinstance(event.get("c"), str):
        return False
    if kind == FILE:
        return isinstance(event.get("n"), str) and isinstance(event.get("f"), str)
    if "t" in event and not isinstance(event["t"], (int, float)):
        return False
    if "s" in event and not (kind == SCALAR and valid_step(event["s"])):
        return False
    return kind == CHILD or _SHAPES[kind](event.get("v"))


def valid_step(step: Any) -> bool:
    return isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP


def step_value(step: Any) -> int:
    """``log(..., step=)``: a whole number from 0 (numpy integers too)."""
    item = getattr(step, "item", None)
    if callable(item) and not isinstance(step, (int, float)):
        step = item()
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if not valid_step(step):
        raise InvalidInput(f"step must be a whole number from 0 to {MAX_STEP}, not {step!r}")
    return step


def child_id(parent_id: str, number: int) -> str:
    return f"{parent_id}_{number}"


def is_descendant(run_id: str, root_id: str) -> bool:
    """Children (and theirs) carry their parent's id as a prefix: ``<parent>_<n>``."""
    return run_id == root_id or run_id.startswith(root_id + "_")
