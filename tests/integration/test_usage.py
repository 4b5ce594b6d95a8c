"""Usage accounting from the outside: ``GET /api/v1/usage`` and ``runyard usage`` report
the hours the attempts recorded in the store held (summed here by hand), refuse bad
periods and groupings with a reason, and let any reader look."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.runs import submit, write
from tests.support.services import ADMIN, ADMIN_TOKEN, Stack, runyard, unique
from tests.support.usage import seed_attempts

API = "/api/v1"
# Ten days ago at midnight: the period is a whole day and the next (since, until).
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)
SINCE, UNTIL = DAY.isoformat(), (DAY + timedelta(days=2)).isoformat()


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> str:
    """A cluster (no workers) with the attempts of ``seed_attempts`` from ``DAY``."""
    name = unique("usage")
    stack.client().create_cluster(name, nodes=1)
    seed_attempts(stack, name, DAY)
    return name


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as client:
        yield client


def hours(rows: list[dict[str, object]], *keys: str) -> dict[tuple[object, ...], object]:
    return {
        tuple(row[k] for k in keys): (row["attempts"], row["slot_hours"], row["gpu_hours"])
        for row in rows
    }


def test_usage_per_team_and_day_over_rest(http: httpx.Client, cluster: str) -> None:
    params = {"since": SINCE, "until": UNTIL, "by": "team,day", "cluster": cluster}
    response = http.get(f"{API}/usage", params=params)

    assert response.status_code == 200, response.text
    report = response.json()
    assert report["by"] == ["team", "day"]
    first, second = DAY.date().isoformat(), (DAY + timedelta(days=1)).date().isoformat()
    assert hours(report["data"], "team", "day") == {
        ("", second): (1, 18.0, 0.0),  # still running: up to the period's end
        ("nlp", first): (1, 2.0, 2.0),
        ("nlp", second): (1, 3.0, 3.0),
        ("vision", first): (2, 3.0, 6.0),  # both attempts of the requeued run
    }
    total = report["total"]
    assert (total["attempts"], total["slot_hours"], total["gpu_hours"]) == (4, 26.0, 11.0)
    assert total["slot_seconds"] == 26 * 3600


def test_usage_filters_and_groups_repeated(http: httpx.Client, cluster: str) -> None:
    params = [("since", SINCE), ("until", UNTIL), ("by", "user"), ("by", "cluster")]
    params += [("cluster", cluster), ("team", "vision")]
    report = http.get(f"{API}/usage", params=params).json()

    assert hours(report["data"], "user", "cluster") == {("ada", cluster): (2, 3.0, 6.0)}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"since": "yesterday"}, "since", "since must be an age (30d, 12h, 90m, 2w)"),
        ({"since": "30x"}, "since", "got '30x'"),
        ({"until": "2026-13-01"}, "until", "until must be an age"),
        ({"by": "team,colour"}, "by", "cannot group usage by 'colour'"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "since", "must be before until"),
    ],
)
def test_bad_periods_and_groups_are_422_with_a_reason(
    http: httpx.Client, params: dict[str, str], field: str, words: str
) -> None:
    response = http.get(f"{API}/usage", params=params)

    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["error"], body["field"]) == ("InvalidInput", field)
    assert words in body["detail"]


def test_any_reader_may_read_usage_and_nobody_else(stack: Stack, cluster: str) -> None:
    viewer = stack.make_token("viewer")
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:
        seen = anonymous.get(f"{API}/usage", headers={"Authorization": f"Bearer {viewer}"})
        assert seen.status_code == 200, seen.text
        assert anonymous.get(f"{API}/usage").status_code == 401


# --- the command line ------------------------------------------------------------------------


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_URL=stack.url, RUNYARD_TOKEN=ADMIN_TOKEN)
    return subprocess.run(
        runyard(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def period(cluster: str) -> list[str]:
    return ["--since", SINCE, "--until", UNTIL, "--cluster", cluster]


def test_cli_table_shows_hours_per_team(stack: Stack, cluster: str) -> None:
    result = cli(stack, "usage", *period(cluster), "--by", "team")

    assert result.returncode == 0, result.stderr
    # Rich draws the header's rule heavy (┃) and the rows' light (│).
    cells = [
        [cell.strip() for cell in re.split("[│┃]", line)]
        for line in result.stdout.splitlines()
        if re.search("[│┃]", line)
    ]
    assert cells[0][:4] == ["TEAM", "ATTEMPTS", "SLOT-HOURS", "GPU-HOURS"]
    # Attempts, slot-hours, GPU-hours per team, then the total
    assert [row[:4] for row in cells[1:]] == [
        ["(no team)", "1", "18.00", "0.00"],
        ["nlp", "1", "5.00", "5.00"],
        ["vision", "2", "3.00", "6.00"],
        ["total", "4", "26.00", "11.00"],
    ]


def test_cli_json_and_csv_carry_the_same_figures(stack: Stack, cluster: str) -> None:
    as_json = cli(stack, "usage", *period(cluster), "--by", "team", "--by", "day", "--json")
    as_csv = cli(stack, "usage", *period(cluster), "--by", "team,day", "--csv")

    assert as_json.returncode == 0 and as_csv.returncode == 0, as_json.stderr + as_csv.stderr
    report = json.loads(as_json.stdout)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    figures = ["attempts", "slot_seconds", "slot_hours", "gpu_seconds", "gpu_hours"]
    assert list(rows[0]) == ["team", "day", *figures]
    assert [(r["team"], r["day"], float(r["slot_hours"])) for r in rows] == [
        (r["team"], r["day"], r["slot_hours"]) for r in report["data"]
    ]
    assert sum(float(r["slot_seconds"]) for r in rows) == report["total"]["slot_seconds"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "last week"], "since must be an age"),
        (["--by", "colour"], "cannot group usage by 'colour'"),
        (["--json", "--csv"], "choose one of --json and --csv"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(stack: Stack, args: list[str], words: str) -> None:
    result = cli(stack, "usage", *args)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line


# --- real runs -------------------------------------------------------------------------------


def test_a_run_a_worker_ran_is_counted_from_its_first_report_to_its_end(
    stack: Stack, workers, http: httpx.Client, tmp_path: Path
) -> None:
    name = unique("usage-real")
    stack.client().create_cluster(name, nodes=1)
    workers.start(name)
    folder = write(tmp_path / "src", {"train.py": "import time\ntime.sleep(1)\n"})
    run = submit(stack.url, folder, "train.py", name, experiment="usage")
    run.wait_for_completion()
    details = stack.client().get_run(run.id)
    first_report = datetime.fromisoformat(details["preparing_at"] or details["starting_at"])
    held = (datetime.fromisoformat(details["completed_at"]) - first_report).total_seconds()

    report = http.get(f"{API}/usage", params={"since": "1d", "by": "user", "cluster": name}).json()

    [row] = report["data"]
    assert (row["user"], row["attempts"]) == (details["submitted_by"], 1)
    assert row["slot_seconds"] == pytest.approx(held, abs=0.01)
    assert held >= 1  # the script slept a second in it
