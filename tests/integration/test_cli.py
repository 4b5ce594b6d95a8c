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
