"""Preemption with real workers: a training script that checkpoints is preempted, gets
SIGTERM, is requeued, and its next attempt finds its checkpoint, resumes from it and
completes; a preemption before the script started only requeues it; a cancel during a
preemption wins. Real Redis, a real scheduler and API, real Celery worker processes (the
local executor; one Docker variant where an engine runs).

The scheduler's choice of a victim is not what is tested here: each test records the
preemption as the leading scheduler does (``store.preemption.request_preemption``, commit,
then ``protocol.control.request_preemption``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, update

from protocol import control
from runyard.client import Client
from store import preemption
from store.db import make_engine
from store.models import Run, utcnow
from tests.support.runs import CLUSTERS_OWN, service_lines, submit, wait_for_status, write
from tests.support.services import Stack, unique, wait_until

GUARD = 120  # a failure guard only, never an expectation
TERMINAL = {"Completed", "Failed", "Canceled"}
REASON = "team vision reclaims 1 slot lent to team nlp"

# Counts steps, saving each one; SIGTERM saves and ends the attempt. A preempted run's next
# attempt resumes from the saved step and completes five steps later.
TRAIN = """\
import signal, sys, time
from pathlib import Path
from runyard.core import Run

run = Run.get_context()
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
checkpoint = Path("checkpoints/step.txt")
step = int(checkpoint.read_text()) if checkpoint.exists() else 0
print(f"attempt {run.attempt} preempted before: {run.previous_attempt_preempted} "
      f"from step {step}", flush=True)
Path("checkpoints").mkdir(exist_ok=True)
Path("outputs").mkdir(exist_ok=True)
end = step + 5 if run.previous_attempt_preempted else None
while end is None or step < end:
    if stop:
        print(f"got SIGTERM: saved step {step}", flush=True)
        break
    step += 1
    checkpoint.write_text(str(step))
    Path("outputs/result.txt").write_text(f"attempt {run.attempt} at step {step}")
    print(f"step {step}", flush=True)
    time.sleep(0.1)
else:
    print(f"done at step {step}", flush=True)
"""

# Ignores SIGTERM until the test lets it go (a file appears), so a cancel lands while the
# worker is still stopping the preempted attempt.
SLOW_TO_STOP = """\
import os, signal, sys, time
released = sys.argv[1]
def on_term(*_):
    print("got SIGTERM, finishing slowly", flush=True)
    while not os.path.exists(released):
        time.sleep(0.05)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("training", flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def database(stack: Stack) -> Iterator[Engine]:
    """The stack's own database, as the scheduler writes to it."""
    engine = make_engine(f"sqlite:///{stack.root / 'data' / 'runyard.db'}")
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def broker(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis.url)
    try:
        yield client
    finally:
        client.close()


def preempt(database: Engine, broker: redis.Redis, run_id: str) -> int:
    """As the leading scheduler does: record the preemption, commit, then mark the attempt
    for its worker. Returns the attempt preempted."""
    with Session(database) as session:
        asked = preemption.request_preemption(session, run_id, "team vision", REASON)
        session.commit()
    assert asked is not None, "the run was not running"
    control.request_preemption(broker, run_id, asked.attempt, asked.reason)
    return asked.attempt


def stored(client: Client, run_id: str, name: str, folder: Path) -> str:
    target = folder / name.replace("/", "_")
    client.download_file(run_id, name, target)
    return target.read_text()


def wait_for_log(client: Client, run_id: str, text: str) -> str:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (log := client.logs(run_id)) and text in log and log,
        GUARD,
        0.1,
        what=f"{text!r} in the log of {run_id}",
    )


def resumes_after_preemption(
    stack: Stack,
    database: Engine,
    broker: redis.Redis,
    cluster: str,
    tmp_path: Path,
    environment: object = None,
) -> str:
    """Preempt a training run at its third step; it completes on its second attempt.
    Returns its log."""
    client = stack.client()
    folder = write(tmp_path / "src", {"train.py": TRAIN})
    run = submit(stack.url, folder, "train.py", cluster, environment=environment)  # type: ignore[arg-type]
    wait_for_log(client, run.id, "step 3\n")

    assert preempt(database, broker, run.id) == 1

    record = wait_for_status(stack, run.id, TERMINAL, timeout=GUARD)
    log = client.logs(run.id)
    assert record["status"] == "Completed", log
    assert (record["attempt"], record["preemptions"]) == (2, 1)
    assert record["previous_attempt_preempted"] is True
    assert (record["preempted_by"], record["preemption_reason"]) == ("team vision", REASON)
    assert record["preempt_requested_at"] is None
    assert record["queued_at"] > record["running_at"]  # back in its queue after it ran

    saved = int(log.split("got SIGTERM: saved step ")[1].split()[0])
    assert f"[runyard] Preempted: {REASON}; requeued" in service_lines(log)
    assert "attempt 1 preempted before: False from step 0" in log
    assert f"attempt 2 preempted before: True from step {saved}" in log
    assert f"done at step {saved + 5}" in log
    assert log.index("got SIGTERM") < log.index("attempt 2 preempted before")
    # Attempt 2's files replaced attempt 1's.
    assert stored(client, run.id, "checkpoints/step.txt", tmp_path) == str(saved + 5)
    result = stored(client, run.id, "outputs/result.txt", tmp_path)
    assert result == f"attempt 2 at step {saved + 5}"
    return log


def test_a_preempted_run_gets_sigterm_is_requeued_and_resumes_from_its_checkpoint(
    stack: Stack, workers, database: Engine, broker: redis.Redis, tmp_path: Path
) -> None:
    cluster = unique("preempt")
    stack.client().create_cluster(cluster, nodes=1, cancel_grace_seconds=GUARD)
    workers.start(cluster)
    resumes_after_preemption(stack, database, broker, cluster, tmp_path)


def test_a_run_preempted_before_its_script_started_is_only_requeued(
    stack: Stack, workers, database: Engine, broker: redis.Redis, tmp_path: Path
) -> None:
    """The preemption lands while its worker prepares it: the first attempt's script never
    runs; the second one runs, told the first was preempted. (The record is written
    directly here: the scheduler preempts running runs, and no worker prepares slowly on
    purpose; the mark for attempt 1 is set before any worker can claim it.)"""
    cluster = unique("early")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "src", {"train.py": TRAIN})
    run = submit(stack.url, folder, "train.py", cluster)
    with Session(database) as session:
        session.execute(
            update(Run)
            .where(col(Run.id) == run.id)
            .values(
                preempt_requested_at=utcnow(), preempted_by="team vision", preemption_reason=REASON
            )
        )
        session.commit()
    control.request_preemption(broker, run.id, 1, REASON)

    workers.start(cluster)

    record = wait_for_status(stack, run.id, TERMINAL, timeout=GUARD)
    log = client.logs(run.id)
    assert record["status"] == "Completed", log
    assert (record["attempt"], record["preemptions"]) == (2, 1)
    assert f"[runyard] Preempted before the script started: {REASON}; requeued" in log
    assert "attempt 1 preempted" not in log  # its script never ran
    assert "attempt 2 preempted before: True from step 0" in log


def test_a_cancel_during_a_preemption_wins(
    stack: Stack, workers, database: Engine, broker: redis.Redis, tmp_path: Path
) -> None:
    cluster = unique("cancelwins")
    client = stack.client()
    client.create_cluster(cluster, nodes=1, cancel_grace_seconds=GUARD)
    workers.start(cluster)
    released = tmp_path / "released"
    folder = write(tmp_path / "src", {"slow.py": SLOW_TO_STOP})
    run = submit(stack.url, folder, "slow.py", cluster, str(released))
    wait_for_log(client, run.id, "training")
    preempt(database, broker, run.id)
    wait_for_log(client, run.id, "got SIGTERM")

    assert client.cancel(run.id)["status"] == "CancelRequested"
    released.touch()

    record = wait_for_status(stack, run.id, TERMINAL, timeout=GUARD)
    assert (record["status"], record["attempt"], record["preemptions"]) == ("Canceled", 1, 0)
    assert "the cancel wins" in client.logs(run.id)


def test_a_preempted_container_run_resumes_from_its_checkpoint(
    stack: Stack,
    workers,
    database: Engine,
    broker: redis.Redis,
    tmp_path: Path,
    run_image: str,
) -> None:
    cluster = unique("preempt-docker")
    stack.client().create_cluster(
        cluster,
        nodes=1,
        executor="docker",
        cancel_grace_seconds=GUARD,
        container={"image": run_image, "memory_mib": 256},
    )
    workers.start(cluster)
    log = resumes_after_preemption(stack, database, broker, cluster, tmp_path, CLUSTERS_OWN)
    containers = [
        s
        for s in service_lines(log)
        if s.startswith("[runyard] Container ") and s.endswith(" started")
    ]
    assert len(containers) == 2  # one per attempt
