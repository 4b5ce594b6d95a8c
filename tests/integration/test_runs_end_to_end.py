"""Submit, queue, run, cancel and lose nodes, end to end: real Redis, API, scheduler and
Celery worker processes, with the local executor."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from runyard.core import Experiment, Run, Workspace
from runyard.errors import InvalidInput, RunFailed, RunFinished
from runyard.status import TERMINAL
from tests.support.runs import local_env, service_lines, status_of, submit, wait_for_status, write
from tests.support.services import Stack, process_alive, unique, wait_until

# A script that holds its slot until a flag file appears (the test decides when it ends).
HOLD = """
import os, sys, time
flag = sys.argv[1]
print("holding", flush=True)
while not os.path.exists(flag):
    time.sleep(0.05)
print("released", flush=True)
"""

# Leaves a mark when it starts: proof of whether a run ever ran.
MARK = """
import sys
open(sys.argv[1], "w").write("started")
print("marked")
"""


def test_a_submitted_run_completes_with_its_log_and_outputs(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("cpu")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    folder = write(
        tmp_path / "src",
        {
            "mylib.py": "def scale(x):\n    return 2 * x\n",
            "train.py": (
                "import os, sys\nfrom mylib import scale\n"
                "print('args', sys.argv[1:])\n"
                "for step in range(3):\n    print('loss', scale(step))\n"
                "print('to stderr', file=sys.stderr)\n"
                "os.makedirs('outputs/nested', exist_ok=True)\n"
                "open('outputs/model.pkl', 'wb').write(b'weights')\n"
                "open('outputs/nested/metrics.json', 'w').write('{}')\n"
            ),
        },
    )
    run = submit(stack.url, folder, "train.py", cluster, "--alpha", "0.5")
    details = run.wait_for_completion()

    assert details["status"] == "Completed"
    assert details["exitCode"] == 0
    log = run.get_details_with_logs()["logFiles"]["user_logs/std_log.txt"]
    assert "args ['--alpha', '0.5']" in log
    assert "loss 4" in log and "to stderr" in log
    assert run.get_file_names() == [
        "outputs/model.pkl",
        "outputs/nested/metrics.json",
        "user_logs/std_log.txt",
    ]
    run.download_file("outputs/model.pkl", tmp_path / "model.pkl")
    assert (tmp_path / "model.pkl").read_bytes() == b"weights"
    record = stack.client().get_run(run.id)
    for stamp in ("queued_at", "preparing_at", "starting_at", "running_at", "finalizing_at"):
        assert record[stamp] is not None, stamp
    assert record["completed_at"] >= record["running_at"] >= record["queued_at"]


def test_a_failing_script_ends_failed_with_exit_code_and_reason(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("cpu")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    folder = write(tmp_path / "src", {"bad.py": "print('about to fail')\nraise SystemExit(3)\n"})
    run = submit(stack.url, folder, "bad.py", cluster)
    with pytest.raises(RunFailed, match="exited with code 3"):
        run.wait_for_completion()
    record = stack.client().get_run(run.id)
    assert (record["status"], record["exit_code"]) == ("Failed", 3)
    assert "about to fail" in stack.client().logs(run.id)


def test_wait_for_completion_streams_the_log_as_it_comes(
    stack: Stack, workers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = unique("cpu")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "import time\nfor i in range(5):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"tick.py": script}), "tick.py", cluster)
    run.wait_for_completion(show_output=True)
    out = capsys.readouterr().out
    assert all(f"tick {i}" in out for i in range(5))
    assert "Status: Completed" in out


def test_runs_on_one_cluster_never_run_on_another_clusters_worker(
    stack: Stack, workers, tmp_path: Path
) -> None:
    a, b = unique("a"), unique("b")
    for name in (a, b):
        stack.client().create_cluster(name, nodes=2)
    workers.start(a, slots=2, name=f"only-{a}")
    workers.start(b, slots=2, name=f"only-{b}")
    folder = write(tmp_path / "src", {"hi.py": "print('hi')\n"})
    runs = [(submit(stack.url, folder, "hi.py", c), c) for c in (a, b, a, b, a, b)]
    for run, cluster in runs:
        record = wait_for_status(stack, run.id, TERMINAL)
        assert record["status"] == "Completed"
        assert record["worker_id"] == f"only-{cluster}"


def test_with_all_slots_busy_queued_runs_list_in_order_with_positions_and_reasons(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("busy")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    flag = tmp_path / "release"
    folder = write(tmp_path / "src", {"hold.py": HOLD, "hi.py": "print('hi')\n"})

    # No worker yet: the queue says why nothing starts.
    first = submit(stack.url, folder, "hold.py", cluster, str(flag))
    assert client.get_run(first.id)["pending_reason"] == f"no worker serves cluster {cluster}"

    workers.start(cluster, slots=1)
    wait_for_status(stack, first.id, {"Running"})
    low = submit(stack.url, folder, "hi.py", cluster, priority=0)
    high = submit(stack.url, folder, "hi.py", cluster, priority=10)
    low2 = submit(stack.url, folder, "hi.py", cluster, priority=0)

    queued = client.cluster_runs(cluster, "queued")
    assert [r["id"] for r in queued] == [high.id, low.id, low2.id]
    assert [r["position"] for r in queued] == [1, 2, 3]
    assert queued[0]["pending_reason"] == "all 1 node(s) busy"
    assert queued[1]["pending_reason"] == "waiting behind 1 run(s); all 1 node(s) busy"
    assert queued[2]["pending_reason"] == "waiting behind 2 run(s); all 1 node(s) busy"
    active = client.cluster_runs(cluster, "active")
    assert [r["id"] for r in active] == [first.id]
    assert all(r["status"] == "Queued" for r in queued)

    flag.touch()
    order = []
    for run in (high, low, low2):
        record = wait_for_status(stack, run.id, TERMINAL)
        order.append((record["running_at"], run.id))
    assert [run_id for _, run_id in sorted(order)] == [high.id, low.id, low2.id]


def test_a_cancelled_queued_run_never_starts(stack: Stack, workers, tmp_path: Path) -> None:
    cluster = unique("cq")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    workers.start(cluster, slots=1)
    flag, mark = tmp_path / "release", tmp_path / "mark"
    folder = write(tmp_path / "src", {"hold.py": HOLD, "mark.py": MARK})
    holder = submit(stack.url, folder, "hold.py", cluster, str(flag))
    wait_for_status(stack, holder.id, {"Running"})
    victim = submit(stack.url, folder, "mark.py", cluster, str(mark))

    victim.cancel()
    assert status_of(stack, victim.id) == "Canceled"
    flag.touch()
    wait_for_status(stack, holder.id, TERMINAL)
    time.sleep(1.0)  # time enough for a wrongly dispatched run to start
    assert not mark.exists()
    record = client.get_run(victim.id)
    assert record["status"] == "Canceled" and record["preparing_at"] is None


@pytest.mark.parametrize("attempt", range(3))
def test_a_run_cancelled_the_instant_a_slot_frees_never_starts(
    stack: Stack, workers, tmp_path: Path, attempt: int
) -> None:
    cluster = unique("race")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    workers.start(cluster, slots=1)
    flag, mark = tmp_path / "release", tmp_path / "mark"
    folder = write(tmp_path / "src", {"hold.py": HOLD, "mark.py": MARK})
    holder = submit(stack.url, folder, "hold.py", cluster, str(flag))
    wait_for_status(stack, holder.id, {"Running"})
    victim = submit(stack.url, folder, "mark.py", cluster, str(mark))

    # Free the slot and cancel at (nearly) the same instant; stagger a little per attempt.
    releaser = threading.Timer(0.01 * attempt, flag.touch)
    releaser.start()
    result = client.cancel(victim.id)
    releaser.join()

    final = wait_for_status(stack, victim.id, TERMINAL)
    assert final["status"] == "Canceled"
    if result["status"] == "Canceled":
        # Cancelled while still waiting: it must never have started.
        time.sleep(1.0)
        assert not mark.exists()
        assert final["preparing_at"] is None


def test_cancel_stops_a_running_run_and_its_whole_process_group(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("stop")
    client = stack.client()
    client.create_cluster(cluster, nodes=1, cancel_grace_seconds=2)
    workers.start(cluster)
    pids = tmp_path / "pids"
    script = f"""
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open({str(pids)!r}, "w").write(f"{{child.pid}}")
def on_term(*_):
    print("got SIGTERM, saving checkpoint", flush=True)
    time.sleep(30)  # ignores the grace period: SIGKILL must follow
signal.signal(signal.SIGTERM, on_term)
i = 0
while True:
    print("step", i, flush=True); i += 1; time.sleep(0.1)
"""
    run = submit(
        stack.url, write(tmp_path / "src", {"stubborn.py": script}), "stubborn.py", cluster
    )
    wait_for_status(stack, run.id, {"Running"})
    wait_until(pids.exists, 10, what="the child pid")
    child_pid = int(pids.read_text())

    started = time.monotonic()
    assert client.cancel(run.id)["status"] == "CancelRequested"
    record = wait_for_status(stack, run.id, TERMINAL, timeout=10)
    elapsed = time.monotonic() - started

    assert record["status"] == "Canceled"
    assert elapsed <= 2 + 2, f"took {elapsed:.1f}s with a 2s grace period"
    assert not process_alive(child_pid)
    assert "got SIGTERM, saving checkpoint" in client.logs(run.id)
    with pytest.raises(RunFinished):
        client.cancel(run.id)


def test_a_worker_killed_mid_run_leaves_the_run_failed_not_running(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("lost")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    worker = workers.start(cluster)
    pid_file = tmp_path / "pid"
    script = (
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"long.py": script}), "long.py", cluster)
    wait_for_status(stack, run.id, {"Running"})
    wait_until(pid_file.exists, 10, what="the run's pid")

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    # NotResponding after the heartbeat timeout (3 s here), then Failed 3 s later.
    wait_for_status(stack, run.id, {"NotResponding", "Failed"}, timeout=15)
    record = wait_for_status(stack, run.id, {"Failed"}, timeout=15)
    assert "node lost" in record["failure_reason"]
    wait_until(lambda: not process_alive(int(pid_file.read_text())), 5, what="the orphan to die")


def test_bulk_cancel_takes_a_list_or_a_whole_queue(stack: Stack, tmp_path: Path) -> None:
    cluster = unique("bulk")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "src", {"hi.py": "print('hi')\n"})
    runs = [submit(stack.url, folder, "hi.py", cluster) for _ in range(4)]

    results = client.cancel_many([runs[0].id, runs[1].id, "no-such-run"])
    assert [r["status"] for r in results[:2]] == ["Canceled", "Canceled"]
    assert results[2]["error"] and "no run" in results[2]["error"]
    rest = client.cancel_queued(cluster)
    assert sorted(r["id"] for r in rest) == sorted(r.id for r in runs[2:])
    assert client.cluster_runs(cluster, "queued") == []


def test_a_cluster_with_live_runs_is_deleted_only_with_force(stack: Stack, tmp_path: Path) -> None:
    from runyard.errors import ClusterBusy, ClusterNotFound

    cluster = unique("gone")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    run = submit(stack.url, write(tmp_path / "src", {"hi.py": "print(1)\n"}), "hi.py", cluster)
    with pytest.raises(ClusterBusy):
        client.delete_cluster(cluster)
    canceled = client.delete_cluster(cluster, force=True)["data"]
    assert [c["id"] for c in canceled] == [run.id]
    with pytest.raises(ClusterNotFound):
        client.get_cluster(cluster)
    assert client.get_run(run.id)["status"] == "Canceled"


def test_an_unchanged_folder_is_stored_once_and_can_be_restored(
    stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("snap")
    stack.client().create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "src", {"hi.py": "print(1)\n", "data/x.txt": "x"})
    first = submit(stack.url, folder, "hi.py", cluster)
    stored = sorted((stack.root / "data" / "snapshots" / "sha256").iterdir())
    (folder / "hi.py").touch()  # a new mtime is not a new snapshot
    second = submit(stack.url, folder, "hi.py", cluster)
    assert sorted((stack.root / "data" / "snapshots" / "sha256").iterdir()) == stored
    a, b = (stack.client().get_run(r.id)["snapshot_digest"] for r in (first, second))
    assert a == b

    archive = Path(second.restore_snapshot(path=tmp_path / "snapshots"))
    assert archive.suffix == ".zip"  # as Azure's restore_snapshot gives it
    with zipfile.ZipFile(archive) as restored:
        assert sorted(restored.namelist()) == ["data/x.txt", "hi.py"]
        assert restored.read("data/x.txt") == b"x"


def test_processes_a_finished_script_leaves_behind_are_stopped(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("tidy")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    pid_file = tmp_path / "bg.pid"
    script = (
        "import subprocess, sys\n"
        "bg = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(bg.pid))\n"
        "print('leaving a background process')\n"
    )
    folder = write(tmp_path / "src", {"bg.py": script, "hi.py": "print('next')\n"})
    first = submit(stack.url, folder, "bg.py", cluster)
    second = submit(stack.url, folder, "hi.py", cluster)
    assert wait_for_status(stack, first.id, TERMINAL)["status"] == "Completed"
    # The slot is free again at once: the next run does not wait for the leftover.
    assert wait_for_status(stack, second.id, TERMINAL, timeout=15)["status"] == "Completed"
    wait_until(lambda: not process_alive(int(pid_file.read_text())), 5, what="the leftover to die")


def test_file_names_with_url_characters_survive_the_round_trip(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("names")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    names = ["a#b.txt", "q?x=1.txt", "space name.txt", "pct%20.txt", "ünï.txt"]
    script = "import os\nos.makedirs('outputs', exist_ok=True)\n" + "".join(
        f"open(os.path.join('outputs', {n!r}), 'w').write({n!r})\n" for n in names
    )
    run = submit(stack.url, write(tmp_path / "src", {"w.py": script}), "w.py", cluster)
    run.wait_for_completion()
    outputs = [name for name in run.get_file_names() if name.startswith("outputs/")]
    assert sorted(outputs) == sorted(f"outputs/{n}" for n in names)
    for name in names:
        run.download_file(f"outputs/{name}", tmp_path / "got")
        assert (tmp_path / "got").read_text() == name


def test_the_cluster_default_environment_applies_under_the_runs_own(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("envs")
    stack.client().create_cluster(
        cluster,
        nodes=1,
        environment={"environment_variables": {"FROM_CLUSTER": "c", "BOTH": "cluster"}},
    )
    workers.start(cluster)
    script = "import os\nprint(os.environ['FROM_CLUSTER'], os.environ['BOTH'])\n"
    folder = write(tmp_path / "src", {"env.py": script})
    env = local_env()
    env.environment_variables = {"BOTH": "run"}
    run = submit(stack.url, folder, "env.py", cluster, environment=env)
    run.wait_for_completion()
    assert "c run" in stack.client().logs(run.id)


def test_a_restarted_worker_cleans_up_what_its_killed_life_left(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("phoenix")
    stack.client().create_cluster(cluster, nodes=1)
    name = unique("stable")
    worker = workers.start(cluster, name=name)
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "gc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(gc.pid))\n"
        "time.sleep(300)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"deep.py": script}), "deep.py", cluster)
    wait_for_status(stack, run.id, {"Running"})
    wait_until(pid_file.exists, 10, what="the grandchild")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()

    workers.start(cluster, name=name)  # same worker id: it finds what it left behind
    record = wait_for_status(stack, run.id, {"Failed"}, timeout=10)
    assert record["failure_reason"] == "worker restarted while the run was active"
    grandchild = int(pid_file.read_text())
    wait_until(lambda: not process_alive(grandchild), 5, what="the grandchild to die")


def test_a_cluster_that_asks_for_it_requeues_a_run_whose_node_was_lost(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("again")
    client = stack.client()
    client.create_cluster(cluster, nodes=1, requeue_on_node_loss=True, max_attempts=2)
    first = workers.start(cluster, name=unique("doomed"))
    marker = tmp_path / "attempted"
    script = (
        "import os, sys, time\n"
        "marker = sys.argv[1]\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').write('1')\n"
        "    print('first attempt', flush=True)\n"
        "    time.sleep(300)\n"
        "print('second attempt finishes', flush=True)\n"
    )
    run = submit(
        stack.url, write(tmp_path / "src", {"retry.py": script}), "retry.py", cluster, str(marker)
    )
    wait_until(marker.exists, 30, 0.1, what="the first attempt")
    wait_until(lambda: "first attempt" in client.logs(run.id), 10, 0.1, what="its output")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    workers.start(cluster, name=unique("rescuer"))
    record = wait_for_status(stack, run.id, TERMINAL, timeout=40)
    assert record["status"] == "Completed"
    assert record["attempt"] == 2
    log = client.logs(run.id)
    assert log.index("first attempt") < log.index("second attempt finishes")


def test_a_submit_to_an_idle_cluster_never_says_its_nodes_are_busy(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """The answer to a submit is read while the scheduler may already be handing that very
    run to a worker: the run must not count against its own cluster's free slots."""
    cluster = unique("idle")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    workers.start(cluster, slots=1)
    first = submit(stack.url, write(tmp_path / "src", {"hi.py": "pass\n"}), "hi.py", cluster)
    first.wait_for_completion()
    spec = {
        "experiment": "e2e",
        "cluster": cluster,
        "script": "hi.py",
        "environment": first.get_details()["runDefinition"]["environment"],
        "snapshot_digest": first.get_details()["properties"]["snapshotId"],
    }
    experiment = Experiment(Workspace(url=stack.url), "e2e")
    said = []
    for _ in range(100):
        answer = client.submit(spec)  # the API's answer, as `runyard submit` prints it
        said.append(answer["pending_reason"])
        Run(experiment, answer["id"]).wait_for_completion()
    busy = [reason for reason in said if "busy" in (reason or "")]
    assert busy == [], f"{len(busy)} of 100 submits to an idle cluster said: {busy[0]}"


def test_a_runs_log_starts_with_what_happened_before_its_script(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("prep")
    stack.client().create_cluster(cluster, nodes=1)
    worker = unique("wp")
    workers.start(cluster, name=worker)
    folder = write(tmp_path / "src", {"hi.py": "print('hello from the script')\n"})
    run = submit(stack.url, folder, "hi.py", cluster)
    run.wait_for_completion()

    lines = run.get_details_with_logs()["logFiles"]["user_logs/std_log.txt"].splitlines()
    script_starts = lines.index("hello from the script")
    before = lines[:script_starts]
    assert before and all(line.startswith("[runyard] ") for line in before), before
    assert before[0].startswith(f"[runyard] Preparing run {run.id} (attempt 1) on worker {worker}")
    assert f"cluster {cluster}" in before[0]
    assert f"[runyard] Interpreter: {sys.executable}" in before
    assert any(line.startswith("[runyard] Started process ") for line in before)
    assert before[-1] == "[runyard] Running hi.py; its output follows"


def test_a_run_whose_interpreter_is_missing_says_why_in_its_log(
    stack: Stack, workers, tmp_path: Path
) -> None:
    from tests.integration.test_cli import cli

    cluster = unique("badpy")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    env = local_env()
    env.python.interpreter_path = "/no/such/python3"
    folder = write(tmp_path / "src", {"hi.py": "print('never')\n"})
    run = submit(stack.url, folder, "hi.py", cluster, environment=env)
    with pytest.raises(RunFailed, match="interpreter '/no/such/python3' not found"):
        run.wait_for_completion()

    printed = cli(stack, "logs", run.id).stdout  # `runyard logs RUN`, as a person types it
    assert service_lines(printed)[0].startswith(f"[runyard] Preparing run {run.id}")
    assert service_lines(printed)[-1] == (
        "[runyard] Failed before the script started: interpreter '/no/such/python3' not "
        "found on this worker; set environment.python.interpreter_path"
    )
    assert "never" not in printed


def test_the_runs_log_is_a_file_listed_and_fetched_as_azure_names_it(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """Seen: wait_for_completion() named user_logs/std_log.txt, which get_file_names() did
    not list and download_file() could not fetch."""
    cluster = unique("stdlog")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "import os, sys\n"
        "for i in range(2000):\n"
        "    print(f'line {i} ünïcödé', flush=True)\n"
        "print('to stderr', file=sys.stderr)\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/a.txt', 'w').write('a')\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"many.py": script}), "many.py", cluster)
    run.wait_for_completion()
    log = run.get_details_with_logs()["logFiles"]["user_logs/std_log.txt"]
    assert "line 1999 ünïcödé" in log and "to stderr" in log

    assert run.get_file_names() == ["outputs/a.txt", "user_logs/std_log.txt"]
    listed = {f["name"]: f["size"] for f in stack.client().list_files(run.id)}
    assert listed["user_logs/std_log.txt"] == len(log.encode())
    run.download_file("user_logs/std_log.txt", tmp_path / "one.txt")
    assert (tmp_path / "one.txt").read_text() == log
    run.download_files(prefix="user_logs", output_directory=tmp_path / "all")
    assert (tmp_path / "all" / "user_logs" / "std_log.txt").read_text() == log
    assert not (tmp_path / "all" / "outputs").exists()


def test_no_upload_can_replace_the_runs_log(stack: Stack, workers, tmp_path: Path) -> None:
    cluster = unique("keep")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    run = submit(stack.url, write(tmp_path / "src", {"hi.py": "print('real')\n"}), "hi.py", cluster)
    run.wait_for_completion()
    with pytest.raises(InvalidInput, match=r"user_logs/std_log\.txt is the run's own log"):
        stack.client().upload_file(run.id, "user_logs/std_log.txt", b"forged")
    run.download_file("user_logs/std_log.txt", tmp_path / "log.txt")
    assert "real" in (tmp_path / "log.txt").read_text()


def test_a_run_the_scheduler_cannot_start_says_why_in_its_log(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """Its cluster stopped running container runs while it waited: it fails at dispatch,
    before any worker sees it, and its log still says why."""
    cluster = unique("changed")
    client = stack.client()
    client.create_cluster(cluster, nodes=1, container_runs=True)
    env = local_env()
    env.docker.base_image = "some-image:1"
    folder = write(tmp_path / "src", {"hi.py": "print('never')\n"})
    run = submit(stack.url, folder, "hi.py", cluster, environment=env)  # no worker: it waits
    client.update_cluster(cluster, container_runs=False)
    workers.start(cluster)
    with pytest.raises(RunFailed, match="cannot start: this run asks for a Docker container"):
        run.wait_for_completion()
    said = service_lines(client.logs(run.id))
    assert len(said) == 1
    assert said[0].startswith(
        "[runyard] Failed before the script started: cannot start: this run asks for a "
        f"Docker container (environment.docker), but cluster '{cluster}' runs scripts as "
        "processes on its hosts"
    )
