"""The scheduler's fence: the highest leadership token that has written to the database.

Only one scheduler admits and runs the watchdog at a time (a lease in Redis); each of its
transactions first raises this row to its own token, and a scheduler whose token is lower
than the one recorded (it lost the lease while paused) is refused there (``store.fence``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class SchedulerFence(SQLModel, table=True):
    __tablename__ = "scheduler_fence"

    name: str = Field(primary_key=True, max_length=64)
    token: int = Field(sa_column=Column(BigInteger, nullable=False))
