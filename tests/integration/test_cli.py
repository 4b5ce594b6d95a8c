"""The runyard command: tables for people, --json for scripts, one line per error."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from runyard.client import Client
from tests.support.runs import first_script_line, service_lines
from tests.support.services import ADMIN_TOKEN, Stack, free_port, runyard, unique, wait_until


def cli(stack: Stack | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    if stack is not None:
        env["RUNYARD_URL"] = stack.url
        env["RUNYARD_TOKEN"] = ADMIN_TOKEN
    return subprocess.run(
        runyard(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(stack: Stack | None, *args: str) -> str:
    result = cli(stack, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["up"],
        ["api"],
        ["scheduler"],
        ["worker"],
        ["clusters"],
        ["cluster"],
        ["cluster", "create"],
        ["cluster", "show"],
        ["cluster", "update"],
        ["cluster", "delete"],
        ["submit"],
        ["runs"],
        ["show"],
        ["logs"],
        ["cancel"],
        ["workers"],
        ["env"],
        ["env", "list"],
        ["env", "show"],
        ["env", "build"],
        ["env", "prune"],
        ["usage"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = cli(None, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_clusters_are_managed_from_the_command_line(stack: Stack) -> None:
    name = unique("cli")
    created = json.loads(ok(stack, "cluster", "create", name, "--nodes", "3", "--json"))
    assert (created["name"], created["nodes"]) == (name, 3)
    assert name in ok(stack, "clusters")
    updated = json.loads(
        ok(stack, "cluster", "update", name, "--nodes", "5", "--grace", "4", "--json")
    )
    assert (updated["nodes"], updated["cancel_grace_seconds"]) == (5, 4)
    assert json.loads(ok(stack, "cluster", "show", name, "--json"))["nodes"] == 5
    assert "deleted cluster" in ok(stack, "cluster", "delete", name)
    one_line_error(cli(stack, "cluster", "show", name), 3, f"no cluster named '{name}'")


def test_submit_list_logs_and_cancel_from_the_command_line(
    stack: Stack, workers, tmp_path: Path
) -> None:
    name = unique("cli")
    ok(stack, "cluster", "create", name, "--nodes", "1")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("import sys\nprint('hello from', sys.argv[1:])\n")
    (tmp_path / "src" / "hold.py").write_text(
        "import time\nprint('holding', flush=True)\ntime.sleep(120)\n"
    )

    submitted = json.loads(
        ok(
            stack,
            "submit",
            str(tmp_path / "src"),
            "--script",
            "train.py",
            "--cluster",
            name,
            "--experiment",
            "cli-e2e",
            "--json",
            "--",
            "--epochs",
            "2",
        )
    )
    assert submitted["status"] == "Queued"
    assert submitted["pending_reason"] == f"no worker serves cluster {name}"
    queued = json.loads(ok(stack, "runs", "--cluster", name, "--status", "queued", "--json"))
    assert [(r["id"], r["position"]) for r in queued] == [(submitted["id"], 1)]

    workers.start(name)
    out = ok(stack, "logs", submitted["id"], "--follow")
    assert "hello from ['--epochs', '2']" in out
    shown = json.loads(ok(stack, "show", submitted["id"], "--json"))
    assert shown["status"] == "Completed"
    one_line_error(cli(stack, "cancel", submitted["id"]), 4, "has already ended")

    holder = json.loads(
        ok(stack, "submit", str(tmp_path / "src"), "-s", "hold.py", "-c", name, "--json")
    )
    wait_until(
        lambda: json.loads(ok(stack, "show", holder["id"], "--json"))["status"] == "Running",
        30,
        0.2,
        what="the run to start",
    )
    active = ok(stack, "runs", "--cluster", name, "--status", "active")
    assert holder["id"] in active and "Running" in active
    assert "CancelRequested" in ok(stack, "cancel", holder["id"])
    wait_until(
        lambda: json.loads(ok(stack, "show", holder["id"], "--json"))["status"] == "Canceled",
        20,
        0.2,
        what="the run to end Canceled",
    )
    assert "holding" in ok(stack, "logs", holder["id"])


def test_bad_input_on_the_command_line_is_one_line_and_an_exit_code(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    one_line_error(
        cli(stack, "submit", str(tmp_path), "-s", "a.py", "-c", "nowhere"),
        3,
        "no cluster named 'nowhere'",
    )
    one_line_error(
        cli(stack, "submit", str(tmp_path / "missing"), "-s", "a.py", "-c", "x1"), 2, "missing"
    )
    one_line_error(cli(stack, "submit", str(tmp_path), "-s", "b.py", "-c", "x1"), 2, "b.py")
    one_line_error(cli(stack, "cluster", "create", "Bad_Name"), 2, "name")
    one_line_error(cli(stack, "show", "no-such-run"), 3, "no run with id")
    one_line_error(cli(stack, "runs", "--status", "sideways"), 2, "--status")


def test_a_snapshot_over_the_client_limits_is_refused_before_upload(
    stack: Stack, tmp_path: Path
) -> None:
    name = unique("big")
    ok(stack, "cluster", "create", name)
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 3 * 1024 * 1024)
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_SNAPSHOT_MAX_BYTES": str(1024**2)}
    result = subprocess.run(
        runyard("submit", str(tmp_path), "-s", "a.py", "-c", name),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    one_line_error(result, 5, "weights.bin")
    assert json.loads(ok(stack, "runs", "--cluster", name, "--json")) == []


def test_submit_says_what_it_left_out_of_the_snapshot(stack: Stack, tmp_path: Path) -> None:
    """A client config with the token and a note holding it: left out, said on stderr."""
    name = unique("secrets")
    ok(stack, "cluster", "create", name)
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "config.json").write_text(json.dumps({"url": stack.url, "token": ADMIN_TOKEN}))
    (tmp_path / "notes.md").write_text(f"my token: {ADMIN_TOKEN}\n")

    result = cli(stack, "submit", str(tmp_path), "-s", "train.py", "-c", name, "--json")

    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "runyard: not in the snapshot, to keep secrets out of runs: config.json (a Runyard "
        "config holding a token), notes.md (holds your token)\n"
    )
    digest = json.loads(result.stdout)["snapshot_digest"]
    archive = stack.client().request("GET", f"/snapshots/{digest}").content
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert tar.getnames() == ["train.py"]


def test_an_unreachable_service_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "RUNYARD_URL": f"http://127.0.0.1:{free_port()}"}
    result = subprocess.run(
        runyard("clusters"), env=env, capture_output=True, text=True, check=False
    )
    one_line_error(result, 6, "cannot reach Runyard")


def test_up_brings_the_whole_service_up_and_serves_new_clusters(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_HEARTBEAT_INTERVAL="0.5", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout, from any cwd
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    up = subprocess.Popen(
        runyard("up", "--port", str(port), "--data-dir", str(tmp_path / "data")),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: f"Runyard API listening on {url}" in (tmp_path / "up.log").read_text(),
            60,
            0.2,
            what="runyard up",
        )
        # First start: an admin token, in the user's credentials file (only its owner can
        # read it), filed under the URL the client config in the data folder names.
        config_file = tmp_path / "data" / "config.json"
        credentials = tmp_path / "xdg" / "runyard" / "credentials.json"
        assert (
            f"Client config: {config_file}; a new admin token in {credentials} (mode 0600)"
            in (tmp_path / "up.log").read_text()
        )
        assert json.loads(config_file.read_text()) == {"url": url}
        assert credentials.stat().st_mode & 0o777 == 0o600
        token = json.loads(credentials.read_text())["services"][url]["token"]
        # Found by the CLI from that folder (or below), with no RUNYARD_* set at all.
        me = subprocess.run(
            runyard("whoami", "--json"),
            cwd=tmp_path / "data",
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(me.stdout)["role"] == "admin"
        env["RUNYARD_URL"] = url
        env["RUNYARD_TOKEN"] = token
        # A cluster created after start is served by a local worker sized to its nodes.
        subprocess.run(
            runyard("cluster", "create", "late", "--nodes", "2"),
            env=env,
            check=True,
            capture_output=True,
        )
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "hi.py").write_text("print('served by up')\n")
        submitted = subprocess.run(
            runyard("submit", str(tmp_path / "src"), "-s", "hi.py", "-c", "late", "--follow"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "served by up" in submitted.stdout
        headers = {"Authorization": f"Bearer {token}"}
        workers = httpx.get(f"{url}/api/v1/workers", headers=headers).json()["data"]
        assert [(w["clusters"], w["slots"]) for w in workers] == [(["late"], 2)]
        assert (tmp_path / "data" / "runyard.db").exists()

        # Resizing the cluster mid-run replaces its worker without harming the run.
        flag = tmp_path / "release"
        (tmp_path / "src" / "hold.py").write_text(
            f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)\n"
            "print('survived the resize')\n"
        )
        held = json.loads(
            subprocess.run(
                runyard("submit", str(tmp_path / "src"), "-s", "hold.py", "-c", "late", "--json"),
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        client = Client(url, token)
        wait_until(
            lambda: client.get_run(held["id"])["status"] == "Running",
            30,
            0.1,
            what="the held run to start",
        )
        subprocess.run(
            runyard("cluster", "update", "late", "--nodes", "3"),
            env=env,
            check=True,
            capture_output=True,
        )
        wait_until(
            lambda: any(w["slots"] == 3 for w in client.list_workers()),
            30,
            0.2,
            what="the resized worker",
        )
        flag.touch()
        wait_until(
            lambda: client.get_run(held["id"])["status"] in ("Completed", "Failed"),
            30,
            0.1,
            what="the held run to end",
        )
        final = client.get_run(held["id"])
        assert final["status"] == "Completed", final["failure_reason"]
        assert "survived the resize" in client.logs(held["id"])
        wait_until(
            lambda: [w["slots"] for w in client.list_workers()] == [3],
            30,
            0.2,
            what="the old worker to retire",
        )
    finally:
        started = _children(up.pid)
        up.send_signal(signal.SIGINT)  # what Ctrl+C sends
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            for pid in [up.pid, *started]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise
        finally:
            log.close()
    # Redis, the API, the scheduler and the workers all stopped with it.
    assert len(started) >= 4
    assert [pid for pid in started if _running(pid)] == []


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_tokens_are_created_listed_and_revoked_from_the_cli(stack: Stack) -> None:
    name = unique("ci-bot")
    created = json.loads(
        ok(stack, "token", "create", "--role", "worker", "--name", name, "--cluster", "gpu-a",
           "--expires", "30d", "--json")
    )  # fmt: skip
    assert created["token"].startswith("ryt_") and created["clusters"] == ["gpu-a"]
    assert created["expires_at"]
    listed = json.loads(ok(stack, "token", "list", "--json"))
    assert [t["name"] for t in listed if t["id"] == created["id"]] == [name]
    assert all("token" not in t for t in listed)
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": created["token"]}
    me = subprocess.run(runyard("whoami", "--json"), env=env, capture_output=True, text=True)
    assert json.loads(me.stdout)["role"] == "worker"
    assert f"revoked {created['id']}" in ok(stack, "token", "revoke", created["id"])
    refused = subprocess.run(runyard("whoami"), env=env, capture_output=True, text=True)
    one_line_error(refused, 9, "revoked")
    audit = json.loads(ok(stack, "audit", "--action", "token.revoke", "--json"))
    assert audit[0]["target"] == created["id"]


def test_cli_token_errors_are_one_line(stack: Stack) -> None:
    one_line_error(cli(stack, "token", "create", "--role", "root"), 2, "role")
    one_line_error(cli(stack, "token", "create", "--role", "viewer", "--expires", "soon"), 2,
                   "--expires")  # fmt: skip
    one_line_error(cli(stack, "token", "revoke", "tok_missing"), 3, "no token")
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": "ryt_wrong"}
    result = subprocess.run(runyard("runs"), env=env, capture_output=True, text=True)
    one_line_error(result, 9, "unknown token")


# --- Exit codes: one test per row of the README's table -------------------------------------


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """A folder with a good script, a crashing one and one that holds until told."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "ok.py").write_text("print('all good')\n")
    (folder / "boom.py").write_text(
        "import sys\nprint('about to fail', flush=True)\nraise SystemExit(3)\n"
    )
    (folder / "hold.py").write_text("import time\nprint('holding', flush=True)\ntime.sleep(120)\n")
    return folder


def test_exit_0_a_followed_run_that_completes_says_so_last(
    stack: Stack, workers, scripts: Path
) -> None:
    name = unique("ok")
    ok(stack, "cluster", "create", name)
    workers.start(name)

    result = cli(stack, "submit", str(scripts), "-s", "ok.py", "-c", name, "--follow")

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[0]
    assert "all good" in result.stdout
    assert result.stderr.strip() == f"run {run_id} Completed"
    waited = cli(stack, "wait", run_id)
    assert (waited.returncode, waited.stderr.strip()) == (0, f"run {run_id} Completed")


def test_exit_2_bad_input_is_said_in_plain_words(stack: Stack, tmp_path: Path) -> None:
    one_line_error(
        cli(stack, "cluster", "create", unique("ex"), "--executor", "slurm"),
        2,
        "error: executor must be one of local, docker",
    )
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "src").mkdir()
    result = cli(stack, "submit", str(tmp_path / "src"), "-s", "../a.py", "-c", "cpu")
    one_line_error(result, 2, "error: script must be a path inside the snapshot")
    for said in (result, cli(stack, "cluster", "create", "Bad_Name")):
        assert "Value error" not in said.stderr and "spec." not in said.stderr


def test_a_missing_folder_is_named_as_typed(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    result = subprocess.run(
        runyard("submit", "work/nope", "-s", "train.py", "-c", "cpu"),
        cwd=tmp_path,
        env={**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": ADMIN_TOKEN},
        capture_output=True,
        text=True,
        check=False,
    )
    one_line_error(result, 2, "error: folder work/nope does not exist")
    (tmp_path / "work" / "file.txt").write_text("")
    result = cli(stack, "submit", str(tmp_path / "work" / "file.txt"), "-s", "t.py")
    one_line_error(result, 2, f"folder {tmp_path / 'work' / 'file.txt'} is not a folder")


def test_exit_3_waiting_on_a_run_that_does_not_exist(stack: Stack) -> None:
    one_line_error(cli(stack, "wait", "no-such-run"), 3, "no run with id 'no-such-run'")


def test_exit_4_a_conflict_with_the_current_state(stack: Stack) -> None:
    name = unique("twice")
    ok(stack, "cluster", "create", name)
    one_line_error(cli(stack, "cluster", "create", name), 4, f"cluster '{name}' exists already")


# Exit 5 (snapshot refused): test_a_snapshot_over_the_client_limits_is_refused_before_upload.
# Exit 6 (unreachable): test_an_unreachable_service_is_one_line.


def test_exit_7_without_any_config_it_says_where_it_looked(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    result = subprocess.run(
        runyard("runs"), cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    one_line_error(result, 7, f"error: no Runyard config found (looked in: {folder}, {tmp_path}")
    assert result.stderr.strip().endswith("; run `runyard up` here or set RUNYARD_URL")
    assert "cannot reach" not in result.stderr and "8642" not in result.stderr


def test_exit_8_a_failed_run_is_loud_in_submit_logs_and_wait(
    stack: Stack, workers, scripts: Path
) -> None:
    name = unique("boom")
    ok(stack, "cluster", "create", name)
    workers.start(name)

    result = cli(stack, "submit", str(scripts), "-s", "boom.py", "-c", name, "--follow")

    run_id = result.stdout.split()[0]
    assert result.returncode == 8, (result.stdout, result.stderr)
    assert "about to fail" in result.stdout
    expected = f"run {run_id} Failed: script exited with code 3"
    assert last_line(result.stderr) == expected
    for command in (["logs", run_id, "--follow"], ["wait", run_id]):
        again = cli(stack, *command)
        assert (again.returncode, again.stderr.strip()) == (8, expected), command
    # As a terminal shows both streams: the reason is the very last line.
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": ADMIN_TOKEN}
    both = subprocess.run(
        runyard("logs", run_id, "--follow"), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert both.stdout.splitlines()[-2:] == ["about to fail", expected]
    assert json.loads(ok(stack, "show", run_id, "--json"))["status"] == "Failed"


def test_exit_9_a_token_that_is_not_known(stack: Stack) -> None:
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": "ryt_not_issued"}
    result = subprocess.run(runyard("wait", "x"), env=env, capture_output=True, text=True)
    one_line_error(result, 9, "unknown token")


def test_exit_10_a_canceled_run_ends_wait_and_follow_with_its_own_code(
    stack: Stack, workers, scripts: Path
) -> None:
    name = unique("stop")
    ok(stack, "cluster", "create", name)
    workers.start(name)
    run_id = json.loads(ok(stack, "submit", str(scripts), "-s", "hold.py", "-c", name, "--json"))[
        "id"
    ]
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": ADMIN_TOKEN}
    waiting = subprocess.Popen(
        runyard("wait", run_id), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    following = subprocess.Popen(
        runyard("logs", run_id, "--follow"), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert following.stdout is not None
    assert first_script_line(following.stdout) == "holding\n"  # it runs, and is followed

    ok(stack, "cancel", run_id)

    expected = f"run {run_id} Canceled: canceled by request"
    for process in (waiting, following):
        _, stderr = process.communicate(timeout=60)
        assert (process.returncode, last_line(stderr)) == (10, expected)


def test_exit_130_ctrl_c_stops_following_quietly(stack: Stack, workers, scripts: Path) -> None:
    name = unique("intr")
    ok(stack, "cluster", "create", name)
    workers.start(name)
    run_id = json.loads(ok(stack, "submit", str(scripts), "-s", "hold.py", "-c", name, "--json"))[
        "id"
    ]
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": ADMIN_TOKEN}
    following = subprocess.Popen(
        runyard("logs", run_id, "--follow"), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert following.stdout is not None
    assert first_script_line(following.stdout) == "holding\n"

    following.send_signal(signal.SIGINT)  # what Ctrl+C sends

    _, stderr = following.communicate(timeout=30)
    assert following.returncode == 130
    assert "Traceback" not in stderr
    ok(stack, "cancel", run_id)


# --- What the commands print ----------------------------------------------------------------


def test_logs_of_a_queued_run_says_it_is_queued_on_stderr(stack: Stack, scripts: Path) -> None:
    name = unique("idle")
    ok(stack, "cluster", "create", name)
    run_id = json.loads(ok(stack, "submit", str(scripts), "-s", "ok.py", "-c", name, "--json"))[
        "id"
    ]

    result = cli(stack, "logs", run_id)

    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr.strip() == (
        f"run {run_id} is queued on {name} (position 1): no worker serves cluster {name}; "
        "no log yet"
    )
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": ADMIN_TOKEN}
    following = subprocess.Popen(
        runyard("logs", run_id, "--follow"), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert following.stderr is not None
    assert following.stderr.readline() == (
        f"run {run_id} is queued on {name} (position 1): no worker serves cluster {name}; "
        "following it once it starts\n"
    )
    ok(stack, "cancel", run_id)
    out, err = following.communicate(timeout=60)
    assert (following.returncode, out, err) == (10, "", f"run {run_id} Canceled\n")


def test_runs_of_every_cluster_show_cluster_experiment_position_and_reason(
    stack: Stack, scripts: Path
) -> None:
    name, experiment = unique("cols"), unique("exp")
    ok(stack, "cluster", "create", name)
    run_id = json.loads(
        ok(stack, "submit", str(scripts), "-s", "ok.py", "-c", name, "-e", experiment,
           "--display-name", "lr 0.1 [baseline]", "--json")
    )["id"]  # fmt: skip

    listed = json.loads(ok(stack, "runs", "-e", experiment, "--json"))
    table = ok(stack, "runs", "-e", experiment)

    assert [(r["id"], r["position"], r["pending_reason"]) for r in listed] == [
        (run_id, 1, f"no worker serves cluster {name}")
    ]
    header, _, row = table.splitlines()[:3]
    assert header.split() == [
        "RUN", "┃", "NAME", "┃", "EXPERIMENT", "┃", "CLUSTER", "┃", "STATUS", "┃", "POS",
        "┃", "PRIO", "┃", "SUBMITTED", "┃", "REASON",
    ]  # fmt: skip
    cells = [c.strip() for c in row.split("│")]
    assert cells[:6] == [run_id, "lr 0.1 [baseline]", experiment, name, "Queued", "1"]
    assert "lr 0.1 [baseline]" in ok(stack, "show", run_id)
    assert cells[-1] == f"no worker serves cluster {name}"


def test_empty_results_say_so_in_one_line(stack: Stack) -> None:
    name = unique("empty")
    ok(stack, "cluster", "create", name)
    assert ok(stack, "runs", "-e", unique("nothing")).startswith("no runs in experiment ")
    assert ok(stack, "runs", "-c", name, "--status", "queued") == f"no queued runs on {name}\n"
    assert ok(stack, "runs", "-c", name) == f"no runs on {name}\n"
    assert ok(stack, "cancel", "--all-queued", name) == f"no queued runs on {name}\n"
    assert json.loads(ok(stack, "cancel", "--all-queued", name, "--json")) == []
    assert ok(stack, "cluster", "show", name).endswith(f"\nno workers serve {name}\n")
    none = ok(stack, "audit", "--action", "no.such.action")
    assert none == "no audit entries matching those filters\n"


def test_tables_print_yes_no_and_readable_details(stack: Stack, workers) -> None:
    name = unique("words")
    ok(stack, "cluster", "create", name, "--nodes", "3", "--default")
    workers.start(name)

    listed = ok(stack, "workers")
    audit = ok(stack, "audit", "--action", "cluster.create", "--limit", "1")

    assert "False" not in listed and "True" not in listed and " no " in listed
    assert "nodes=3" in audit and "is_default=yes" in audit
    assert "{" not in audit and "'" not in audit and "False" not in audit
    ok(stack, "cluster", "update", name, "--no-default")


@pytest.mark.parametrize(
    "command", [["submit"], ["cluster", "create"], ["logs"], ["runs"], ["usage"]]
)
def test_help_shows_no_type_after_plain_flags(command: list[str]) -> None:
    result = cli(None, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout


def test_cluster_image_and_executor_from_the_command_line(stack: Stack) -> None:
    name = unique("img")
    created = json.loads(
        ok(stack, "cluster", "create", name, "--executor", "docker", "--image", "base:1",
           "--default", "--json")
    )  # fmt: skip
    assert (created["executor"], created["container"], created["is_default"]) == (
        "docker", {"image": "base:1"}, True,
    )  # fmt: skip
    assert "base:1" in ok(stack, "cluster", "show", name)
    # Changing the image keeps the rest of the container policy.
    stack.client().update_cluster(name, container={"image": "base:1", "memory_mib": 512})
    updated = json.loads(
        ok(stack, "cluster", "update", name, "--image", "base:2", "--executor", "local",
           "--no-default", "--json")
    )  # fmt: skip
    assert (updated["executor"], updated["container"], updated["is_default"]) == (
        "local", {"image": "base:2", "memory_mib": 512}, False,
    )  # fmt: skip


def test_submit_image_and_env_file_run_in_that_container(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    """A Docker cluster without an image of its own: the image named on the command line
    (or in an environment file) is the one the run uses."""
    name = unique("dock")
    ok(stack, "cluster", "create", name, "--executor", "docker")
    workers.start(name)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "where.py").write_text(
        "import os\n"
        "print('in a container:', os.path.exists('/.dockerenv'), os.environ.get('SEED'))\n"
    )
    (tmp_path / "env.yaml").write_text(
        f"name: seeded\ndocker:\n  base_image: {run_image}\nenvironment_variables:\n  SEED: '7'\n"
    )

    by_image = cli(stack, "submit", str(folder), "-s", "where.py", "-c", name, "--image",
                   run_image, "--follow", timeout=180)  # fmt: skip
    by_file = cli(stack, "submit", str(folder), "-s", "where.py", "-c", name, "--env-file",
                  str(tmp_path / "env.yaml"), "--follow", timeout=180)  # fmt: skip

    assert by_image.returncode == 0, by_image.stderr
    assert "in a container: True None" in by_image.stdout
    assert by_file.returncode == 0, by_file.stderr
    assert "in a container: True 7" in by_file.stdout
    run = json.loads(ok(stack, "show", by_file.stdout.split()[0], "--json"))
    assert run["environment"]["docker"]["base_image"] == run_image


def test_a_misspelt_env_file_is_refused_before_anything_is_sent(
    stack: Stack, tmp_path: Path
) -> None:
    name = unique("typo")
    ok(stack, "cluster", "create", name)
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "env.json").write_text('{"docker": {"baseImage": "x"}}')
    result = cli(stack, "submit", str(tmp_path), "-s", "a.py", "-c", name, "--env-file",
                 str(tmp_path / "env.json"))  # fmt: skip
    one_line_error(result, 2, "unknown key 'docker.baseImage'")
    assert json.loads(ok(stack, "runs", "-c", name, "--json")) == []


def test_a_run_that_fails_before_its_script_starts_says_why(
    stack: Stack, workers, scripts: Path
) -> None:
    """Before, `logs` printed nothing and `--follow` exited 0 for such a run."""
    name = unique("nopy")
    ok(stack, "cluster", "create", name)
    workers.start(name)

    followed = cli(stack, "submit", str(scripts), "-s", "ok.py", "-c", name,
                   "--interpreter", "/no/such/python", "--follow")  # fmt: skip

    run_id = followed.stdout.split()[0]
    reason = json.loads(ok(stack, "show", run_id, "--json"))["failure_reason"]
    assert reason and followed.returncode == 8, followed.stderr
    assert last_line(followed.stderr) == f"run {run_id} Failed: {reason}"
    logs = cli(stack, "logs", run_id)
    assert logs.returncode == 0
    # The log itself says why, in Runyard's own last line, followed or read afterwards.
    said = f"[runyard] Failed before the script started: {reason}"
    assert service_lines(logs.stdout)[-1] == said
    assert service_lines(followed.stdout)[-1] == said
