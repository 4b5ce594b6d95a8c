"""The status sets every part of the service sorts runs by (``runyard.status``).

The queue counts a cluster's runs as waiting or active from one read and lists the rest as
history, the live feed stops at a final status, and the CLI waits while a run waits: each
relies on every status being in exactly one of the three sets, and on a status read from
JSON (a plain string) being found in them.
"""

from __future__ import annotations

import pytest

from runyard.status import ACTIVE, TERMINAL, TRANSITIONS, WAITING, RunStatus


@pytest.mark.parametrize("status", list(RunStatus))
def test_every_status_is_exactly_one_of_waiting_active_or_terminal(status: RunStatus) -> None:
    assert [status in WAITING, status in ACTIVE, status in TERMINAL].count(True) == 1


@pytest.mark.parametrize("status", list(RunStatus))
def test_a_status_read_from_json_is_found_in_its_set(status: RunStatus) -> None:
    text = status.value  # what the REST API and the channel carry
    assert (text in WAITING, text in ACTIVE, text in TERMINAL) == (
        status in WAITING,
        status in ACTIVE,
        status in TERMINAL,
    )


@pytest.mark.parametrize("status", list(RunStatus))
def test_only_a_terminal_status_has_no_way_out(status: RunStatus) -> None:
    assert status.is_terminal == (status in TERMINAL) == (not TRANSITIONS[status])
