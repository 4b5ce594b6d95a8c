"""What runs log: series and their points, rollups of long series, tags and properties;
the batch of events a client sends, and the shapes metrics are read back in.

Metric values are returned as they were logged (``Any``: a number, NaN and infinities
included, a string or a bool), so these reads are sent by a JSON encoder that allows NaN
(``api.routes.tracking.JSONWithNaN``) or made browser-safe first (``api.live.json_safe``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import BigInteger, Column, Double, Index, Text
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel
from typing_extensions import TypedDict  # pydantic reads only this one before 3.12

MAX_EVENTS = 10_000  # per batch a client sends

# A tag's or property's value as its key/value index holds it: the first 200 characters,
# so an index row stays under PostgreSQL's B-tree row limit for any value (migration 0016).
VALUE_PREFIX = "substr(value, 1, 200)"
VALUE_PREFIX_LENGTH = 200


class Metric(SQLModel, table=True):
    """One named series of a run, and how it was logged (which decides its shape)."""

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    name: str = Field(primary_key=True, max_length=255)
    kind: str = Field(max_length=16)  # a name of runyard.tracking.events.KIND_NAMES
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    count: int = 0  # points stored
    # The index a point logged without a step gets (one past the highest so far): a
    # ``log(..., step=5)`` is stored at index 5.
    next_idx: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class MetricPoint(SQLModel, table=True):
    """One value of a series. ``producer``/``seq``/``sub`` identify the logging call that
    made it; ``idx`` is its position in the series. A replayed batch is recognised by
    ``MetricProducer`` (one row per producer), not by a unique index over every point:
    that index cost more than the point itself on every insert."""

    __table_args__ = (Index("ix_metricpoint_series", "run_id", "name", "column", "idx"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id")
    name: str = Field(max_length=255)
    column: str = Field(default="", max_length=255)
    producer: str = Field(max_length=64)  # the channel or client that logged it
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    sub: int = 0
    idx: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Numbers (NaN and infinities too) in value, strings in text; vtype says which Python
    # type was logged (f float, i int, b bool, s str) so it reads back exactly as logged.
    value: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    vtype: str = Field(default="f", max_length=1)
    logged_at: float = Field(sa_column=Column(Double, nullable=False))


class MetricProducer(SQLModel, table=True):
    """How far a producer's events for a run are stored: the highest ``seq`` applied. A
    producer numbers its events in order and the ingest applies each run's entries in
    stream order, so an event at or below it is a redelivery and is skipped (the row is
    written in the transaction that stores the events)."""

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    producer: str = Field(primary_key=True, max_length=64)
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class MetricRollup(SQLModel, table=True):
    """A series summarised per ``ROLLUP_SPAN`` indexes (first, last, extremes, count), kept
    by the ingest as points arrive. A chart of a long series reads these instead of every
    point: a million points are a thousand rows."""

    run_id: str = Field(primary_key=True, foreign_key="run.id")
    name: str = Field(primary_key=True, max_length=255)
    column: str = Field(default="", primary_key=True, max_length=255)
    bucket: int = Field(primary_key=True, sa_type=BigInteger)  # idx // ROLLUP_SPAN
    first_idx: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_idx: int = Field(sa_column=Column(BigInteger, nullable=False))
    min_value: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    max_value: float | None = Field(default=None, sa_column=Column(Double, nullable=True))
    n: int = 0


ROLLUP_SPAN = 1024


class RunTag(SQLModel, table=True):
    """A tag changes freely; one set without a value (``run.tag("key")``) holds NULL."""

    # The runs with a tag (and value): ``GET /runs?tags=`` (migration 0016).
    __table_args__ = (Index("ix_runtag_key_value", "key", sql_text(VALUE_PREFIX), "run_id"),)

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    value: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class RunProperty(SQLModel, table=True):
    """Set once: a property, unlike a tag, never changes."""

    __table_args__ = (Index("ix_runproperty_key_value", "key", sql_text(VALUE_PREFIX), "run_id"),)

    run_id: str = Field(foreign_key="run.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    value: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


# --- in: what a client sends ----------------------------------------------------------------


# A producer's numbers stay far inside a database BIGINT (and a JSON double), whatever
# ``first_seq`` a client sends.
MAX_SEQ = 2**53


class EventBatch(BaseModel):
    """What a client (``start_logging``, or a fetched ``Run``) sends: events it numbered."""

    model_config = ConfigDict(extra="forbid")

    producer: str = PydanticField(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    first_seq: int = PydanticField(ge=0, le=MAX_SEQ)
    events: list[dict[str, Any]] = PydanticField(max_length=MAX_EVENTS)
    wait: bool = PydanticField(
        default=False,
        description="Answer only once these events, and every batch sent before them, are "
        "in the database (what complete(), tag() and flush() need)",
    )


class EventsAccepted(SQLModel):
    accepted: int  # events in the batch
    stored: bool  # whether they are in the database already (the batch asked to wait)


# --- out: metrics read back -----------------------------------------------------------------
# A whole-series read may carry millions of points: those shapes are TypedDicts, built and
# sent as plain dicts (validating and dumping them through pydantic would add about half
# again to the read). The API still declares them, so the OpenAPI schema shows them.


class MetricSeriesPublic(TypedDict):
    """A whole series: ``points`` are ``[idx, column, value]`` in index order."""

    kind: str
    description: str
    count: int
    points: list[list[Any]]


class RunMetricsPublic(TypedDict):
    runs: dict[str, dict[str, MetricSeriesPublic]]  # {run_id: {name: series}}


class HistoryWindow(BaseModel):
    """Which part of a series a read wants (a column of it, for rows and tables, and an index
    range), and how: whole and paged by ``offset``/``limit``, or downsampled to at most
    ``max_points``. The history route takes it as its query parameters."""

    column: str = ""
    max_points: int | None = PydanticField(default=None, ge=4, le=100_000)
    start: int | None = PydanticField(default=None, ge=0)
    end: int | None = PydanticField(default=None, ge=0)
    offset: int = PydanticField(default=0, ge=0)
    limit: int = PydanticField(default=10_000, ge=1, le=100_000)


class MetricHistoryPublic(TypedDict):
    """One series (a column of it): ``points`` are ``[idx, value]``, whole and paged, or
    downsampled (then an index may be a bucket's middle, a float)."""

    name: str
    kind: str
    column: str
    count: int
    downsampled: bool
    points: list[list[Any]]


class MetricNamePublic(SQLModel):
    """A series with its kind and length; ``last``, its latest value, is set only for a
    single-column series (a scalar or a list) that has a point."""

    name: str
    kind: str
    count: int
    last: Any = None


class MetricNamesPublic(SQLModel):
    data: list[MetricNamePublic]
    count: int
