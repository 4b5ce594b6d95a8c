"""A preempted attempt as its worker ends it, and the next attempt as it begins.

The scheduler marks the attempt in Redis (``protocol.control.request_preemption``, with its
reason: the worker has no database). The runner stops the script as on cancel (SIGTERM, the
cluster's grace period, SIGKILL), stores ./outputs and ./checkpoints, and reports the run
back to its queue (``report_requeue``). The next attempt finds those files back in its
working folder before the script starts (``put_back``), and ``Run.get_context()`` tells the
script it was preempted (``runyard.tracking.contract``).
"""

from __future__ import annotations

import redis

from protocol import control
from protocol.budgets import RunBudgets
from protocol.messages import RunAssignment
from runyard.client import Client
from runyard.status import RunStatus
from worker.reporter import RunReporter
from worker.restore import restore
from worker.run_folder import RunFolder


def reason(client: redis.Redis, run_id: str, attempt: int) -> str | None:
    """Why the scheduler preempted the attempt; None while it has not."""
    try:
        return control.preemption_reason(client, run_id, attempt)
    except redis.RedisError:
        return None  # keep training through a Redis outage


def _canceled(client: redis.Redis, run_id: str, attempt: int) -> bool:
    try:
        return control.is_cancel_requested(client, run_id, attempt)
    except redis.RedisError:
        return False


def report_requeue(
    client: redis.Redis, reporter: RunReporter, assignment: RunAssignment, when: str = ""
) -> None:
    """The attempt is over as preempted: the run is reported back to its queue for its next
    attempt, with the scheduler's reason in its log. A cancel that came meanwhile wins:
    the run ends Canceled."""
    run_id, attempt = assignment.run_id, assignment.attempt
    preempted = f"Preempted {when}" if when else "Preempted"
    if _canceled(client, run_id, attempt):
        reporter.note(f"{preempted}, and canceled: the cancel wins")
        reporter.state(RunStatus.CANCELED, reason="canceled by request")
        return
    why = reason(client, run_id, attempt) or ""
    reporter.note(f"{preempted}: {why or 'by the scheduler'}; requeued")
    reporter.state(RunStatus.QUEUED, reason=why or None, preempted=True)


def put_back(
    api_url: str, run_token: str, folder: RunFolder, reporter: RunReporter, budgets: RunBudgets
) -> None:
    """A requeued run's next attempt: what the attempts before it stored under ./outputs
    and ./checkpoints is back in the working folder before the script starts, at most its
    workspace budget. Read with the run's own token (a worker reads no run's files);
    written through descriptors (``worker.restore``)."""
    assert folder.workdir is not None  # a folder the worker just made
    api = Client(api_url, run_token)
    restored = restore(api, reporter.run_id, folder.workdir, budgets.workspace_bytes)
    for line in restored.refused:
        reporter.note(line)
    if restored.files:
        reporter.note(
            f"Put back {restored.files} files ({restored.bytes} bytes) of outputs/ and "
            "checkpoints/ from the previous attempt"
        )
