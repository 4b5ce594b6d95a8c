"""What a run leaves behind in the database: its log chunks (read as pages, as a file, or
counted) and the index of its stored files."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, LargeBinary, cast
from sqlmodel import Session, col, func, select

from store.models import Run, RunFile, RunLog


def logs_after(
    session: Session, run_id: str, after_seq: int = -1, limit: int | None = None
) -> list[RunLog]:
    query = (
        select(RunLog)
        .where(RunLog.run_id == run_id, RunLog.seq > after_seq)
        .order_by(col(RunLog.seq))
    )
    return list(session.exec(query if limit is None else query.limit(limit)))


def has_log_file(run: Run) -> bool:
    """A submitted run (one with a script) has its log as a file; an interactive run or a
    child made by ``child_run()`` prints nowhere Runyard reads."""
    return bool(run.script)


def log_bytes(session: Session, run_id: str) -> int:
    """The size of the run's log in UTF-8 bytes, counted by the database (a log may be
    gigabytes: it is never read for this)."""
    if session.get_bind().dialect.name == "postgresql":
        size = func.octet_length(RunLog.text)
    else:  # SQLite: the length of a blob is its bytes
        size = func.length(cast(RunLog.text, LargeBinary))
    total = session.exec(
        select(func.coalesce(func.sum(size), 0)).where(RunLog.run_id == run_id)
    ).one()
    return int(total)


LOG_PAGE = 200  # chunks per query when the log is read out as a file (each up to 64 KiB)


def log_text(engine: Engine, run_id: str) -> Iterator[bytes]:
    """The run's log as UTF-8, a page of chunks at a time, each page in a session of its
    own (a download of a large log holds no transaction open while the client reads)."""
    after = -1
    while True:
        with Session(engine) as session:
            page = logs_after(session, run_id, after, LOG_PAGE)
        if not page:
            return
        yield "".join(chunk.text for chunk in page).encode()
        after = page[-1].seq


def file_usage(session: Session, run_id: str, besides: str = "") -> tuple[int, int]:
    """How many files the run has stored, and their bytes (leaving out ``besides``, which
    an upload of that name replaces)."""
    count, size = session.exec(
        select(func.count(), func.coalesce(func.sum(RunFile.size), 0)).where(
            RunFile.run_id == run_id, RunFile.name != besides
        )
    ).one()
    return int(count), int(size)


def run_files(session: Session, run_id: str) -> list[RunFile]:
    return list(
        session.exec(select(RunFile).where(RunFile.run_id == run_id).order_by(col(RunFile.name)))
    )
