"""Job arrays (many runs in one request) over REST, the SDK and the CLI, end to end: real
Redis, API, scheduler and Celery worker processes, with the local executor."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runyard.client import Client
from runyard.core import Experiment, ScriptRunConfig, Workspace
from runyard.errors import RunyardError
from tests.support.runs import local_env, write
from tests.support.services import ADMIN_TOKEN, RedisServer, Stack, runyard, unique

SUBMISSIONS = 10  # per token per minute, for this module
ARRAY_RUNS = 6000  # array runs per token per hour, for this module


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_service: RedisServer) -> Iterator[Stack]:
    live = Stack(
        root=tmp_path_factory.mktemp("arrays"),
        redis=redis_service,
        extra_env={
            "RUNYARD_SUBMIT_RATE_LIMIT": f"{SUBMISSIONS}/minute",
            "RUNYARD_ARRAY_RUN_RATE_LIMIT": f"{ARRAY_RUNS}/hour",
            "RUNYARD_SNAPSHOT_MAX_BYTES": str(1024 * 1024),
        },
    )
    live.start()
    try:
        yield live
    finally:
        live.stop()


def archive_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ARCHIVE = archive_of({"t.py": "import sys\nprint('args', sys.argv[1:])\n"})


def post_array(
    stack: Stack, token: str, spec: dict, archive: bytes | None = ARCHIVE
) -> httpx.Response:
    files = {"snapshot": ("s.tar.gz", archive, "application/gzip")} if archive else None
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        return http.post("/api/v1/runs/array", data={"spec": json.dumps(spec)}, files=files)


def array_spec(cluster: str, experiment: str, n: int, **fields: object) -> dict:
    spec = {
        "experiment": experiment,
        "cluster": cluster,
        "script": "t.py",
        "arguments_list": [["--seed", str(i)] for i in range(n)],
    }
    return {**spec, **fields}


def runs_of(stack: Stack, experiment: str) -> int:
    return stack.client().count_runs(experiment=experiment)


def test_an_array_of_20_runs_completes_each_with_its_own_arguments(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("arr")
    stack.client().create_cluster(cluster, nodes=4)
    folder = write(tmp_path / "src", {"train.py": "import sys\nprint('args', sys.argv[1:])\n"})
    config = ScriptRunConfig(
        source_directory=folder, script="train.py", compute_target=cluster, environment=local_env()
    )
    experiment = unique("sweep")

    runs = Experiment(Workspace(url=stack.url), experiment).submit_array(
        config, [["--lr", f"0.{i}"] for i in range(20)], tags={"sweep": "lr"}
    )

    assert len(runs) == 20 and [r.id for r in runs] == [
        f"{runs.array_id}_{i:02d}" for i in range(20)
    ]
    listed = stack.client().list_runs(experiment=experiment, limit=100)
    assert len(listed) == 20
    assert {(r["id"], r["array_id"], r["array_index"]) for r in listed} == {
        (run.id, runs.array_id, i) for i, run in enumerate(runs)
    }
    assert {r["status"] for r in listed} == {"Queued"}
    assert runs[7].get_tags() == {"sweep": "lr"}
    audit = stack.client().audit(action="run.submit_array")
    assert [(e["target"], e["detail"]["count"]) for e in audit if e["target"] == runs.array_id] == [
        (runs.array_id, 20)
    ]

    workers.start(cluster, slots=4)
    for i, run in enumerate(runs):
        assert run.wait_for_completion()["status"] == "Completed"
        assert f"args ['--lr', '0.{i}']" in stack.client().logs(run.id)


def test_5000_runs_in_one_request_are_accepted_and_listed(stack: Stack) -> None:
    cluster = unique("big")
    stack.client().create_cluster(cluster, nodes=1)
    experiment = unique("sweep5k")
    token = stack.make_token("member")

    response = post_array(stack, token, array_spec(cluster, experiment, 5000))

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["count"] == 5000 and body["cluster"] == cluster
    assert body["run_ids"] == [f"{body['array_id']}_{i:04d}" for i in range(5000)]
    assert runs_of(stack, experiment) == 5000
    assert stack.client().count_runs(cluster=cluster, status="Queued") == 5000
    queued = stack.client().cluster_runs(cluster, "queued")  # its first page, in queue order
    assert [r["id"] for r in queued[:3]] == body["run_ids"][:3]
    assert [r["position"] for r in queued[:3]] == [1, 2, 3]
    last = stack.client().get_run(body["run_ids"][-1])
    assert (last["arguments"], last["array_index"]) == (["--seed", "4999"], 4999)


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        (
            {"arguments_list": [["ok"], ["ok"], ["ok"], ["nul\x00"]]},
            422,
            "arguments_list[3]: arguments cannot contain NUL",
        ),
        ({"arguments_list": [["ok"], ["x"] * 1001]}, 422, "arguments_list[1]"),
        ({"arguments_list": [[]] * 10_001}, 422, "at most 10000"),
        ({"arguments_list": []}, 422, "at least 1"),
        ({"arguments": ["--a"]}, 422, "arguments_list, not arguments"),
        ({"parent_run_id": "someone"}, 422, "parent_run_id is not allowed"),
        ({"cluster": "nowhere"}, 404, "nowhere"),
        ({"environment": {"docker": {"enabled": "yes please"}}}, 422, "environment"),
    ],
)
def test_a_bad_array_is_refused_whole_and_names_what_is_wrong(
    stack: Stack, fields: dict, status: int, words: str
) -> None:
    cluster = unique("bad")
    stack.client().create_cluster(cluster, nodes=1)
    experiment = unique("refused")
    token = stack.make_token("member")

    response = post_array(stack, token, {**array_spec(cluster, experiment, 3), **fields})

    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert runs_of(stack, experiment) == 0
    assert stack.client().cluster_runs(cluster, "queued") == []


def test_an_array_is_one_submission_and_its_runs_have_a_budget_of_their_own(
    stack: Stack,
) -> None:
    cluster = unique("rate")
    stack.client().create_cluster(cluster, nodes=1)
    experiment = unique("budget")
    token = stack.make_token("member")
    client = Client(stack.url, token)
    digest = None

    # One 5,000-run array and one 999-run array, then single runs up to the submit limit.
    first = post_array(stack, token, array_spec(cluster, experiment, 5000))
    assert first.status_code == 201, first.text
    digest = stack.client().get_run(first.json()["run_ids"][0])["snapshot_digest"]
    spec = {"experiment": experiment, "cluster": cluster, "script": "t.py"}
    second = post_array(stack, token, array_spec(cluster, experiment, 999), archive=None)
    assert second.status_code == 422  # no snapshot and no digest: refused, nothing counted
    second = post_array(
        stack, token, array_spec(cluster, experiment, 999, snapshot_digest=digest), archive=None
    )
    assert second.status_code == 201, second.text

    # Over the array run budget: refused whole, and the submission is not taken either.
    over = post_array(
        stack, token, array_spec(cluster, experiment, 2, snapshot_digest=digest), archive=None
    )
    assert over.status_code == 429, over.text
    assert "array run limit" in over.json()["detail"] and "retry in" in over.json()["detail"]
    assert runs_of(stack, experiment) == 5999
    one = post_array(
        stack, token, array_spec(cluster, experiment, 1, snapshot_digest=digest), archive=None
    )
    assert one.status_code == 201, one.text

    # Three arrays so far count as three submissions: seven single runs fit, the eighth not.
    for _ in range(SUBMISSIONS - 3):
        client.submit({**spec, "snapshot_digest": digest})
    with pytest.raises(RunyardError) as refused:
        client.submit({**spec, "snapshot_digest": digest})
    assert refused.value.http_status == 429 and "submission limit" in refused.value.message
    assert runs_of(stack, experiment) == 6000 + SUBMISSIONS - 3


def test_an_array_larger_than_the_whole_budget_says_to_split_it(stack: Stack) -> None:
    cluster = unique("huge")
    stack.client().create_cluster(cluster, nodes=1)
    experiment = unique("huge")

    response = post_array(
        stack, stack.make_token("member"), array_spec(cluster, experiment, ARRAY_RUNS + 1)
    )

    assert response.status_code == 429, response.text
    assert "split it" in response.json()["detail"]
    assert runs_of(stack, experiment) == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"environment": {"environment_variables": {"BIG": "a" * 7000}}},
        {"tags": {"a": "x" * 4000, "b": "y" * 4000}},
    ],
)
def test_an_array_whose_copies_would_be_too_large_is_refused_and_says_to_split(
    stack: Stack, fields: dict
) -> None:
    """Each run stores its own copy of environment, tags and arguments: 10,000 runs of a
    7 KB environment would write 70 MB, over MAX_ARRAY_STORED_BYTES."""
    cluster = unique("amp")
    stack.client().create_cluster(cluster, nodes=1)
    experiment = unique("amp")

    response = post_array(
        stack, stack.make_token("member"), array_spec(cluster, experiment, 10_000, **fields)
    )

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "environment" in detail and "tags" in detail and "split the array" in detail
    assert runs_of(stack, experiment) == 0


def test_a_snapshot_refused_as_too_large_takes_no_submission(stack: Stack) -> None:
    cluster = unique("toolarge")
    stack.client().create_cluster(cluster, nodes=1)
    experiment = unique("toolarge")
    token = stack.make_token("member")
    too_large = os.urandom(1024 * 1024 + 1)
    single = {"experiment": experiment, "cluster": cluster, "script": "t.py"}

    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        for i in range(SUBMISSIONS):  # as many refusals as the token has submissions
            if i % 2:
                response = post_array(
                    stack, token, array_spec(cluster, experiment, 2), archive=too_large
                )
            else:
                files = {"snapshot": ("s.tar.gz", too_large, "application/gzip")}
                response = http.post("/api/v1/runs", data={"spec": json.dumps(single)}, files=files)
            assert response.status_code == 413, response.text

    accepted = post_array(stack, token, array_spec(cluster, experiment, 2))
    assert accepted.status_code == 201, accepted.text  # the refusals were not charged
    assert runs_of(stack, experiment) == 2


def test_hostile_bodies_are_refused_before_any_work(stack: Stack) -> None:
    cluster = unique("hostile")
    stack.client().create_cluster(cluster, nodes=1)
    experiment = unique("hostile")
    token = stack.make_token("member")

    # A spec over the form field limit (1 MiB): long argument lists are cut off as they stream.
    long_lists = array_spec(cluster, experiment, 1, arguments_list=[["x" * 1000]] * 2000)
    too_long = post_array(stack, token, long_lists)
    assert too_long.status_code in (400, 413), too_long.text
    assert "Traceback" not in too_long.text
    # A whole body over the path's limit: 413 before a byte of it is read.
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        huge = http.post(
            "/api/v1/runs/array",
            content=b"x" * (3 * 1024 * 1024),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert huge.status_code == 413, huge.text
    assert runs_of(stack, experiment) == 0


def test_a_run_token_cannot_submit_an_array(stack: Stack) -> None:
    cluster = unique("tok")
    stack.client().create_cluster(cluster, nodes=1)
    started = stack.client().start_interactive(unique("parent"))

    response = post_array(stack, started["run_token"], array_spec(cluster, unique("child"), 2))

    assert response.status_code == 403, response.text
    assert "not job arrays" in response.json()["detail"]


# --- the command line -------------------------------------------------------------------------


def cli(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_URL=stack.url, RUNYARD_TOKEN=ADMIN_TOKEN)
    return subprocess.run(
        runyard(*args), env=env, capture_output=True, text=True, timeout=120, input=stdin
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]


def test_submit_array_from_the_command_line_runs_each_index(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("cli")
    stack.client().create_cluster(cluster, nodes=2)
    folder = write(tmp_path / "src", {"t.py": "import sys\nprint('args', sys.argv[1:])\n"})
    experiment = unique("cli-sweep")
    python = ["--interpreter", sys.executable]

    result = cli(
        stack, "submit-array", str(folder), "-s", "t.py", "-c", cluster, "-e", experiment,
        "--array", "0-6:2", *python, "--json", "--", "--seed", "{index}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    assert len(submitted["run_ids"]) == 4

    lines = tmp_path / "args.txt"
    lines.write_text("# lr and name\n--lr 0.1 --name 'first run'\n\n--lr 0.2 --name second\n")
    from_file = cli(
        stack, "submit-array", str(folder), "-s", "t.py", "-c", cluster, "-e", experiment,
        "--array-args", str(lines), *python, "--", "--fold", "{index}",
    )  # fmt: skip
    assert from_file.returncode == 0, from_file.stderr
    array_id = from_file.stdout.split()[0]
    assert "2 runs queued" in from_file.stdout
    assert runs_of(stack, experiment) == 6

    workers.start(cluster, slots=2)
    expected = {
        **{run_id: f"['--seed', '{2 * i}']" for i, run_id in enumerate(submitted["run_ids"])},
        f"{array_id}_0": "['--fold', '0', '--lr', '0.1', '--name', 'first run']",
        f"{array_id}_1": "['--fold', '1', '--lr', '0.2', '--name', 'second']",
    }
    for run_id, arguments in expected.items():
        waited = cli(stack, "wait", run_id)
        assert waited.returncode == 0, waited.stderr
        assert f"args {arguments}" in stack.client().logs(run_id)


def test_submit_array_bad_input_is_one_line_and_stores_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("clibad")
    stack.client().create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "src", {"t.py": "print(1)\n"})
    experiment = unique("clibad")
    base = ["submit-array", str(folder), "-s", "t.py", "-c", cluster, "-e", experiment]
    (tmp_path / "quotes.txt").write_text("--ok 1\n--name 'unclosed\n")
    (tmp_path / "two.txt").write_text("--a\n--b\n")

    one_line_error(cli(stack, *base), 2, "give --array RANGE and/or --array-args FILE")
    one_line_error(cli(stack, *base, "--array", "9-2"), 2, "'9-2' is an empty range")
    one_line_error(cli(stack, *base, "--array", "1,x"), 2, "'x' is not N, N-M or N-M:STEP")
    one_line_error(cli(stack, *base, "--array", "0-10000"), 2, "at most 10000 runs")
    one_line_error(
        cli(stack, *base, "--array-args", str(tmp_path / "quotes.txt")), 2, "quotes.txt line 2"
    )
    one_line_error(
        cli(stack, *base, "--array", "0-2", "--array-args", str(tmp_path / "two.txt")),
        2,
        "names 3 indexes but",
    )
    one_line_error(
        cli(stack, *base, "--array-args", str(tmp_path / "missing.txt")), 2, "cannot read"
    )
    assert runs_of(stack, experiment) == 0


def test_submit_array_has_help() -> None:
    result = subprocess.run(
        runyard("submit-array", "--help"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--array-args" in result.stdout
