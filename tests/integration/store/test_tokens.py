"""Run tokens (``store/tokens.py``): a run's token is valid exactly while its attempt is."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Engine
from sqlmodel import Session

from runyard.errors import Unauthorized
from runyard.status import RunStatus
from store import tokens
from store.models import Run, utcnow
from tests.support.database import make_cluster, queue_run


def test_a_run_token_lives_exactly_as_long_as_its_attempt(engine: Engine) -> None:
    """Valid while its attempt is handed over or running; dead once the run is requeued
    (node lost), on the next attempt, and at the end."""
    key = b"k" * 32
    with Session(engine) as session:
        make_cluster(session)
        run_id = queue_run(session)
        token = tokens.mint_run_token(key, run_id, 1)

        def set_run(**values: Any) -> None:
            session.execute(sqlalchemy.update(Run).where(Run.id == run_id).values(**values))
            session.commit()

        def holds() -> str:
            try:
                return tokens.authenticate(session, key, token).name
            except Unauthorized as exc:
                return exc.message

        set_run(attempt=1, dispatched_at=utcnow())  # handed to a worker
        assert holds() == f"run:{run_id}"
        set_run(status=RunStatus.RUNNING)
        assert holds() == f"run:{run_id}"
        set_run(status=RunStatus.QUEUED, dispatched_at=None)  # requeued after node loss
        assert "waiting to start again" in holds()
        set_run(attempt=2, dispatched_at=utcnow())
        assert "attempt 2" in holds()
        token = tokens.mint_run_token(key, run_id, 2)
        assert holds() == f"run:{run_id}"
        set_run(status=RunStatus.COMPLETED)
        assert "has ended" in holds()
        forged = tokens.mint_run_token(b"x" * 32, run_id, 2)
        with pytest.raises(Unauthorized, match="invalid run token"):
            tokens.authenticate(session, key, forged)
