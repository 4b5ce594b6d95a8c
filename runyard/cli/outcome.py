"""How a run ended, as the one last line ``wait`` and ``--follow`` print, and the exit code.

A script that loops over ``runyard submit ... --follow`` must not take a failed run for a
good one: only Completed exits 0; Failed and Canceled have codes of their own (errors.py).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.text import Text

from runyard.cli import output
from runyard.client import Client
from runyard.errors import RunCanceled, RunFailed
from runyard.status import RunStatus

EXIT_CODES = {
    RunStatus.COMPLETED.value: 0,
    RunStatus.FAILED.value: RunFailed.exit_code,
    RunStatus.CANCELED.value: RunCanceled.exit_code,
}
COLOURS = {"Completed": "green", "Failed": "red", "Canceled": "yellow"}


def final_line(run: dict[str, Any]) -> str:
    """``run ID Failed: script exited with code 1`` (no reason: just the status)."""
    status = str(run.get("status"))
    reason = run.get("failure_reason")
    if not reason and status == RunStatus.FAILED.value and run.get("exit_code") is not None:
        reason = f"exit code {run['exit_code']}"
    return f"run {run['id']} {status}" + (f": {reason}" if reason else "")


def wait_for_end(api: Client, run_id: str) -> dict[str, Any]:
    """The run once it has ended: its event stream ends after its final status."""
    for _ in api.events(run_id):
        pass
    return ended(api, run_id)


def ended(api: Client, run_id: str) -> dict[str, Any]:
    """The run as stored once everything it reported is (its reason, its exit code): the
    live stream can announce the end a moment before the database has it."""
    return api.get_run(run_id, fresh=True)


def report(run: dict[str, Any]) -> int:
    """Print the final line on stderr (stdout stays the log) and return the exit code."""
    sys.stdout.flush()
    status = str(run.get("status"))
    colour = COLOURS.get(status, "red")
    # A Text, not markup: the reason is the script's own words and may hold brackets.
    output.errors.print(Text(final_line(run), style=colour), soft_wrap=True)
    # A run the stream gave up on before it ended is not a success either.
    return EXIT_CODES.get(status, RunFailed.exit_code)
