"""A run floods what the service keeps for it: tracking events, output, files, child runs,
live streams. Each budget (``protocol/budgets.py``, set per cluster) stops it where the
bytes enter, with the budget named in its log and record; other runs never notice."""

from __future__ import annotations

import httpx
import pytest

from runyard.core import Experiment, Workspace
from tests.hostile.conftest import Target
from tests.support.services import ADMIN, Stack

LOOP_LOGGING = """\
import time
from runyard.core import Run
run = Run.get_context()
deadline = time.time() + 120
while time.time() < deadline:
    for i in range(1000):
        run.log("flood", "x" * 200)
    time.sleep(0.01)
"""


def budget(target: Target, **budgets: int) -> None:
    target.stack.client().update_cluster(target.cluster, budgets=budgets)


def test_a_tracking_flood_is_stopped_at_its_budget(target: Target) -> None:
    """Seen: a run's events went to Redis in 64 MiB batches with no total: one run could
    take the broker down for every cluster."""
    budget(target, tracking_bytes=2 * 1024 * 1024, tracking_bytes_per_second=256 * 1024)
    run = target.submit(LOOP_LOGGING)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["message"] == (
        "stopped: over its budget of 2 MiB of tracking events "
        "(cluster setting budgets.tracking_bytes)"
    )
    assert "stopping the run: it is over its budget" in target.stack.client().logs(run.id)
    stored = len(run.get_metrics(name="flood")["flood"])
    assert 0 < stored <= 2 * 1024 * 1024 // 200
    budget(target)
    target.assert_still_serving()


def test_an_output_flood_is_stopped_at_its_budget(target: Target) -> None:
    budget(target, log_bytes=64 * 1024)
    run = target.submit("import sys\nfor i in range(10**6):\n    print('y' * 100)\n")
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "over its budget of 64 KiB of output" in details["error"]["message"]
    log = target.stack.client().logs(run.id)
    assert len(log) < 64 * 1024 + 1024
    assert log.rstrip().endswith("(cluster setting budgets.log_bytes)")
    budget(target)
    target.assert_still_serving()


def test_files_past_the_budget_are_not_stored_and_the_run_says_why(target: Target) -> None:
    budget(target, files=3)
    script = (
        "import os\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "for i in range(5):\n"
        "    open(f'outputs/{i}.txt', 'w').write(str(i))\n"
    )
    run = target.submit(script)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "over its budget of 3 of files" in details["error"]["message"]
    stored = ["outputs/0.txt", "outputs/1.txt", "outputs/2.txt", "user_logs/std_log.txt"]
    assert run.get_file_names() == stored  # the log does not count against the files budget
    budget(target)
    target.assert_still_serving()


@pytest.mark.parametrize("target", ["local"], indirect=True)
def test_ten_thousand_children_stop_at_the_trees_budget(target: Target) -> None:
    budget(target, children=10_000)
    script = (
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "kids = run.create_children(count=10_000)\n"
        "grandkids = kids[0].create_children(count=50)\n"
        "run.flush()\n"
        "print('made', len(kids) + len(grandkids))\n"
    )
    run = target.submit(script)
    assert run.wait_for_completion()["status"] == "Completed"
    tree = target.stack.client().json("GET", "/runs", params={"parent": run.id, "limit": 1})[
        "count"
    ]
    assert tree == 10_000
    grandchildren = target.stack.client().json(
        "GET", "/runs", params={"parent": f"{run.id}_1", "limit": 1}
    )["count"]
    assert grandchildren == 0  # over the tree's budget: refused
    budget(target)
    target.assert_still_serving()


def test_live_streams_per_token_are_bounded(stack: Stack, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    run = Experiment(Workspace(url=stack.url), "streams").start_logging()
    token = run._events().client.token  # the run's own token, as a script holds it
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{stack.url}/api/v1/runs/{run.id}/events"
    with httpx.Client(headers=headers, timeout=30) as http:
        opened = []
        try:
            for _ in range(16):
                response = http.send(http.build_request("GET", url), stream=True)
                assert response.status_code == 200
                opened.append(response)
            refused = http.get(url)
            assert refused.status_code == 429
            assert "16 live streams open" in refused.json()["detail"]
            with httpx.stream("GET", url, headers=ADMIN, timeout=30) as other:
                assert other.status_code == 200  # another token has streams of its own
        finally:
            for response in opened:
                response.close()
    run.complete()
    assert httpx.get(f"{stack.url}/readyz", headers=ADMIN, timeout=10).status_code == 200


def test_filling_its_working_folder_stops_the_run(target: Target) -> None:
    """The working folder is on the worker's disk: a run filling it is stopped at its
    budget, and its folder goes with it."""
    budget(target, workspace_bytes=8 * 1024 * 1024)
    script = (
        "import os, time\n"
        "with open('filler.bin', 'wb') as f:\n"
        "    for i in range(2000):\n"
        "        f.write(os.urandom(1 << 20))\n"
        "        f.flush()\n"
        "        time.sleep(0.02)\n"
    )
    run = target.submit(script)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["message"] == (
        "stopped: over its budget of 8 MiB of disk in its working folder "
        "(cluster setting budgets.workspace_bytes)"
    )
    budget(target)
    target.assert_still_serving()
