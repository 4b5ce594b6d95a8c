"""How a run ended, as the one last line ``wait`` and ``--follow`` print, and the exit code.

A script that loops over ``runyard submit ... --follow`` must not take a failed run for a
good one: only Completed exits 0; Failed and Canceled have codes of their own (errors.py).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from rich.text import Text

from runyard.cli import output
from runyard.client import Client
from runyard.core.run_follow import follow_to_end
from runyard.errors import RunCanceled, RunFailed
from runyard.status import RunStatus

EXIT_CODES = {
    RunStatus.COMPLETED.value: 0,
    RunStatus.FAILED.value: RunFailed.exit_code,
    RunStatus.CANCELED.value: RunCanceled.exit_code,
}
COLOURS = {
    RunStatus.COMPLETED.value: "green",
    RunStatus.FAILED.value: "red",
    RunStatus.CANCELED.value: "yellow",
}


def final_line(run: dict[str, Any]) -> str:
    """``run ID Failed: script exited with code 1`` (no reason: just the status)."""
    status = str(run.get("status"))
    reason = run.get("failure_reason")
    if not reason and status == RunStatus.FAILED.value and run.get("exit_code") is not None:
        reason = f"exit code {run['exit_code']}"
    # The reason is the run's own words (printable: no terminal escapes in them).
    return output.printable(f"run {run['id']} {status}" + (f": {reason}" if reason else ""))


# Service reads in a row that may fail (about a second apart) before ``wait`` gives up:
# long enough for the API to restart, short enough that a script is not left hanging.
PATIENCE = 60


def wait_for_end(
    api: Client, run_id: str, write: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The run once it has ended (the SDK's own loop: a stream closed early is opened again);
    with ``write``, its log goes there meanwhile. Giving up raises ServiceUnavailable (exit
    6, "the run is still Running"): a run whose end was not seen is neither good nor bad."""
    return follow_to_end(api, run_id, write, patience=PATIENCE)


def report(run: dict[str, Any]) -> int:
    """Print the final line on stderr (stdout stays the log) and return the exit code."""
    sys.stdout.flush()
    status = str(run.get("status"))
    colour = COLOURS.get(status, "red")
    # A Text, not markup: the reason is the script's own words and may hold brackets.
    output.errors.print(Text(final_line(run), style=colour), soft_wrap=True)
    return EXIT_CODES[status]  # wait_for_end returns only ended runs
