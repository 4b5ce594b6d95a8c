"""Runs in hardened containers, on a real Docker engine with a locally built image."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runyard.core import Environment, Experiment, Run, Workspace
from runyard.errors import RunFailed
from runyard.status import TERMINAL
from tests.support.runs import CLUSTERS_OWN, service_lines, submit, wait_for_status, write
from tests.support.services import ADMIN_TOKEN, OLDEST_PYTHON, Stack, runyard, unique, wait_until
from worker.app import service_id

# Every run here takes its cluster's image, as a run that names no environment does.
in_its_image = partial(submit, experiment="docker", environment=CLUSTERS_OWN)


def docker_cluster(stack: Stack, image: str, **container: object) -> str:
    name = unique("box")
    stack.client().create_cluster(
        name,
        nodes=2,
        executor="docker",
        cancel_grace_seconds=2,
        container={"image": image, "memory_mib": 256, **container},
    )
    return name


def containers_of(run_id: str) -> list[str]:
    found = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=runyard.run={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.split()


PROBE = r"""
import json, os, sys
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
try:
    os.setuid(0)
    became_root = True
except PermissionError:
    became_root = False
def exists_anywhere(name):
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev")]
        if name in files:
            return os.path.join(root, name)
    return None
report = {
    "uid": os.getuid(),
    "cap_eff": status["CapEff"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "became_root": became_root,
    "docker_socket": any(os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock")),
    "host_secret": exists_anywhere(sys.argv[1]),
    "root_writable": os.access("/usr", os.W_OK),
    "cwd": os.getcwd(),
}
os.makedirs("outputs", exist_ok=True)
open("outputs/report.json", "w").write(json.dumps(report))
print("REPORT", json.dumps(report))
"""


def test_a_run_completes_in_a_confined_container_with_its_log_and_outputs(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    import json

    cluster = docker_cluster(stack, run_image)
    workers.start(cluster, slots=2)
    secret = f"host-secret-{unique('s')}"
    (tmp_path / secret).write_text("do not read")
    run = in_its_image(
        stack.url, write(tmp_path / "src", {"probe.py": PROBE}), "probe.py", cluster, secret
    )
    run.wait_for_completion()
    assert run.get_file_names() == ["outputs/report.json", "user_logs/std_log.txt"]
    run.download_file("outputs/report.json", tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["uid"] == 1000
    assert report["cap_eff"] == "0000000000000000"
    assert report["no_new_privs"] == "1"
    assert report["became_root"] is False
    assert report["docker_socket"] is False
    assert report["host_secret"] is None
    assert report["root_writable"] is False
    assert report["cwd"] == "/workspace"
    log = stack.client().logs(run.id)
    assert "REPORT" in log
    # Before the script's output: what the worker did to start it, each line Runyard's own.
    lines = log.splitlines()
    before = lines[: next(i for i, line in enumerate(lines) if line.startswith("REPORT"))]
    assert before and all(line.startswith("[runyard] ") for line in before), before
    assert before[0].startswith(f"[runyard] Preparing run {run.id}")
    assert f"cluster {cluster}, executor docker" in before[0]
    assert any(
        line.startswith(f"[runyard] Image {run_image}: present on this worker (") for line in before
    )
    assert "[runyard] Interpreter: /usr/bin/python3" in before
    assert any(
        line.startswith("[runyard] Container ") and line.endswith(" started") for line in before
    )
    assert before[-1] == "[runyard] Running probe.py; its output follows"
    record = stack.client().get_run(run.id)
    assert record["preparing_at"] <= record["starting_at"] <= record["running_at"]
    assert containers_of(run.id) == []


@pytest.mark.parametrize(
    ("image", "python"),
    [
        pytest.param("run_image", (3, 11), id="debian-12-python-3.11"),
        # The first session on a machine builds this image (debootstrap: about 2 minutes,
        # 4 on a busy machine) inside this test, so it gets more than the default timeout.
        pytest.param(
            "oldest_python_image", OLDEST_PYTHON, id="oldest-python", marks=pytest.mark.timeout(900)
        ),
    ],
)
def test_the_tracking_walkthrough_works_inside_a_container(
    stack: Stack,
    workers,
    image: str,
    python: tuple[int, int],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Any image with the oldest supported Python or newer runs the mounted SDK as it is."""
    cluster = docker_cluster(stack, request.getfixturevalue(image))
    workers.start(cluster)
    script = (
        "import sys\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "run.tag('python', '%d.%d' % sys.version_info[:2])\n"
        "run.log('message', 'hi')\n"
        "for i in range(5):\n"
        "    run.log('loss', 1 / (i + 1))\n"
        "    run.log_row('curve', x=i, y=i * i)\n"
        "run.log_list('values', (v for v in [3, 2, 1]))\n"
        "run.log_table('t', {'a': [1, 2], 'b': [3, 4]})\n"
        "open('pic.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n')\n"
        "run.log_image('pic', path='pic.png')\n"
        "run.upload_file('outputs/notes.txt', 'pic.png')\n"
        "run.tag('where', 'container')\n"
        "kids = run.create_children(2)\n"
        "[k.log('k', 1) or k.complete() for k in kids]\n"
    )
    run = in_its_image(stack.url, write(tmp_path / "src", {"walk.py": script}), "walk.py", cluster)
    run.wait_for_completion()
    again = Run(Experiment(Workspace(url=stack.url), "docker"), run.id)
    metrics = again.get_metrics()  # stored when wait_for_completion() returned
    assert metrics["message"] == "hi"
    assert metrics["loss"] == [1 / (i + 1) for i in range(5)]
    assert metrics["curve"] == {"x": [0, 1, 2, 3, 4], "y": [0, 1, 4, 9, 16]}
    assert metrics["values"] == [3, 2, 1]
    assert metrics["t"] == {"a": [1, 2], "b": [3, 4]}
    assert metrics["pic"] in again.get_file_names()
    assert "outputs/notes.txt" in again.get_file_names()
    assert again.get_tags() == {"python": "{}.{}".format(*python), "where": "container"}
    assert len(list(again.get_children())) == 2


def test_a_script_over_its_memory_limit_fails_as_out_of_memory(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    cluster = docker_cluster(stack, run_image, memory_mib=64)
    workers.start(cluster)
    script = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    run = in_its_image(stack.url, write(tmp_path / "src", {"hog.py": script}), "hog.py", cluster)
    with pytest.raises(RunFailed, match=r"out of memory \(limit 64 MiB\)"):
        run.wait_for_completion()
    assert containers_of(run.id) == []


def test_cancel_stops_the_container_within_its_grace_period(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster)
    script = (
        "import signal, time\n"
        "def term(*_):\n"
        "    print('got SIGTERM', flush=True)\n"
        "    time.sleep(60)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "while True:\n"
        "    print('tick', flush=True); time.sleep(0.2)\n"
    )
    run = in_its_image(stack.url, write(tmp_path / "src", {"loop.py": script}), "loop.py", cluster)
    wait_for_status(stack, run.id, {"Running"}, 60)
    wait_until(lambda: "tick" in stack.client().logs(run.id), 20, 0.1, what="output")
    started = time.monotonic()
    run.cancel()
    record = wait_for_status(stack, run.id, TERMINAL, 15)
    elapsed = time.monotonic() - started
    assert record["status"] == "Canceled"
    assert elapsed <= 2 + 2, f"{elapsed:.1f}s with a 2 s grace period"
    assert "got SIGTERM" in stack.client().logs(run.id)
    assert containers_of(run.id) == []


def test_two_runs_on_one_worker_do_not_see_each_others_files(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster, slots=2)
    script = (
        "import os, sys, time\n"
        "me, other = sys.argv[1], sys.argv[2]\n"
        "open(f'mark-{me}', 'w').write(me)\n"
        "time.sleep(3)\n"
        "found = []\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys')]\n"
        "    found += [f for f in files if f == f'mark-{other}']\n"
        "print('SAW OTHER' if found else 'ALONE', flush=True)\n"
    )
    folder = write(tmp_path / "src", {"look.py": script})
    a = in_its_image(stack.url, folder, "look.py", cluster, "a", "b")
    b = in_its_image(stack.url, folder, "look.py", cluster, "b", "a")
    for run in (a, b):
        wait_for_status(stack, run.id, {"Running"}, 60)
    for run in (a, b):
        ended = wait_for_status(stack, run.id, TERMINAL, 60)
        assert ended["status"] == "Completed", ended.get("failure_reason")
        log = stack.client().logs(run.id)
        assert "ALONE" in log and "SAW OTHER" not in log


def test_an_image_that_cannot_be_had_fails_the_run_with_a_reason(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster)
    env = Environment("missing")
    env.docker.base_image = "runyard-no-such-image:never"
    folder = write(tmp_path / "src", {"a.py": "print(1)\n"})
    run = submit(stack.url, folder, "a.py", cluster, experiment="docker", environment=env)
    with pytest.raises(RunFailed, match=r"runyard-no-such-image:never.*cannot be pulled"):
        run.wait_for_completion()
    assert stack.client().get_run(run.id)["running_at"] is None
    # `runyard logs` says what happened: Seen, it printed nothing for such a run.
    said = service_lines(run.get_details_with_logs()["logFiles"]["user_logs/std_log.txt"])
    assert said[0].startswith(f"[runyard] Preparing run {run.id}")
    assert "[runyard] Image runyard-no-such-image:never: not on this worker; pulling it" in said
    assert said[-1].startswith(
        "[runyard] Failed before the script started: image 'runyard-no-such-image:never' "
        "is not on this worker and cannot be pulled: "
    )


class HeldRegistry:
    """A registry on this host that answers the engine's ping, then holds every other
    request unanswered until released: an image pull that stays in progress for as long
    as the test needs it to, with no clock involved. Released, it answers 404."""

    def __init__(self) -> None:
        self.released = threading.Event()
        released = self.released

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the standard library's name
                if self.path != "/v2/":
                    released.wait()
                self.send_response(200 if self.path == "/v2/" else 404)
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(b"{}")

            do_HEAD = do_GET

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def image(self, name: str) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> HeldRegistry:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def test_following_a_run_shows_the_image_pull_while_it_is_pulled(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    """What the worker does before the script is in the followed log as it does it: the
    pull is held for as long as the test reads, so the line can only come from a live log."""
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster)
    env = {**os.environ, "RUNYARD_URL": stack.url, "RUNYARD_TOKEN": ADMIN_TOKEN}
    with HeldRegistry() as registry:
        image = registry.image("runyard-held:1")
        environment = Environment("held")
        environment.docker.base_image = image
        folder = write(tmp_path / "src", {"a.py": "print('never')\n"})
        run = submit(
            stack.url, folder, "a.py", cluster, experiment="docker", environment=environment
        )
        following = subprocess.Popen(
            runyard("logs", run.id, "--follow"), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert following.stdout is not None
        pulling = f"[runyard] Image {image}: not on this worker; pulling it\n"
        shown = []
        for line in following.stdout:
            shown.append(line)
            if line == pulling:
                break
        assert shown[-1] == pulling, shown
        assert shown[0].startswith(f"[runyard] Preparing run {run.id}")
        assert stack.client().get_run(run.id)["status"] == "Preparing"  # the pull is held
    _, stderr = following.communicate(timeout=120)
    assert following.returncode == 8, stderr  # the pull failed once released: Failed
    assert "cannot be pulled" in stderr


def test_an_interpreter_missing_from_the_image_fails_the_run_saying_so_in_its_log(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster)
    env = Environment("no-such-python")
    env.python.interpreter_path = "python9"
    folder = write(tmp_path / "src", {"a.py": "print('never')\n"})
    run = submit(stack.url, folder, "a.py", cluster, experiment="docker", environment=env)
    with pytest.raises(RunFailed, match="interpreter 'python9' not found in image"):
        run.wait_for_completion()
    said = service_lines(stack.client().logs(run.id))
    assert f"[runyard] Image {run_image}: looking for it on this worker" in said
    assert "[runyard] Looking for interpreter 'python9' in image " + run_image in said
    assert said[-1] == (
        f"[runyard] Failed before the script started: interpreter 'python9' not found in "
        f"image {run_image}; set environment.python.interpreter_path"
    )


def test_a_killed_and_restarted_worker_leaves_no_orphan_container(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    name = unique("dw")
    worker = workers.start(cluster, name=name)
    run = in_its_image(
        stack.url,
        write(tmp_path / "src", {"long.py": "import time\ntime.sleep(300)\n"}),
        "long.py",
        cluster,
    )
    wait_for_status(stack, run.id, {"Running"}, 60)
    wait_until(lambda: containers_of(run.id) != [], 20, 0.1, what="the container")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert containers_of(run.id) != []  # the container outlives its worker...
    workers.start(cluster, name=name)  # ...until the worker comes back and cleans up
    record = wait_for_status(stack, run.id, {"Failed"}, 30)
    assert record["failure_reason"] == "worker restarted while the run was active"
    wait_until(lambda: containers_of(run.id) == [], 20, 0.2, what="the orphan's removal")


def test_a_worker_never_removes_another_deployments_containers(
    stack: Stack, workers, run_image: str
) -> None:
    """Two Runyard deployments on one Docker engine (a dev stack beside a real one): a
    worker starting up removes only its own deployment's leftovers."""
    other = subprocess.run(
        [
            "docker", "create", "--label", "runyard.run=other-deployments-run",
            "--label", "runyard.worker=w-elsewhere", "--label", "runyard.service=elsewhere",
            run_image, "python3", "-c", "pass",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = subprocess.run(
        [
            "docker", "create", "--label", "runyard.run=own-orphan-run",
            "--label", "runyard.worker=w-long-gone",
            "--label", f"runyard.service={service_id(stack.redis.url)}",
            run_image, "python3", "-c", "pass",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        workers.start(docker_cluster(stack, run_image))  # recovers leftovers at start
        assert containers_of("other-deployments-run") == [other[:12]]
        assert containers_of("own-orphan-run") == []  # its own deployment's orphan goes
    finally:
        subprocess.run(["docker", "rm", "-f", other, ours], capture_output=True, check=False)


def test_logs_stream_live_from_the_container(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster)
    script = (
        "import time\nfor i in range(30):\n    print('line', i, flush=True)\n    time.sleep(0.1)\n"
    )
    run = in_its_image(stack.url, write(tmp_path / "src", {"talk.py": script}), "talk.py", cluster)
    seen: list[str] = []
    reader = threading.Thread(
        target=lambda: seen.extend(stack.client().follow_logs(run.id)), daemon=True
    )
    reader.start()
    wait_until(lambda: "line 3" in "".join(seen), 30, 0.05, what="live lines")
    assert stack.client().get_run(run.id)["status"] == "Running"
    reader.join(30)
    assert "line 29" in "".join(seen)


def test_a_user_managed_environment_cannot_leave_a_docker_clusters_containers(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    """Its workers hold the Docker socket: running on the host there would be root."""
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster)
    env = Environment("mine")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = "python3"
    script = "import os\nprint('uid', os.getuid(), os.path.exists('/.dockerenv'))\n"
    folder = write(tmp_path / "src", {"who.py": script})
    run = submit(stack.url, folder, "who.py", cluster, experiment="docker", environment=env)
    run.wait_for_completion()
    assert "uid 1000 True" in stack.client().logs(run.id)


# Ignores SIGTERM and ticks forever: only SIGKILL ends it.
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: print('got SIGTERM', flush=True))\n"
    "while True:\n"
    "    print('tick', flush=True); time.sleep(0.2)\n"
)


@pytest.mark.parametrize("grace, signals", [(2.0, 1), (300.0, 2)], ids=["sigterm", "twice"])
def test_a_stopped_worker_removes_its_runs_container_and_records_the_run(
    stack: Stack, workers, run_image: str, tmp_path: Path, grace: float, signals: int
) -> None:
    """SIGTERM: the container gets the grace period, then is removed; a second SIGTERM
    removes it at once, however long the grace period."""
    cluster = unique("halt")
    stack.client().create_cluster(
        cluster,
        nodes=1,
        executor="docker",
        cancel_grace_seconds=grace,
        container={"image": run_image, "memory_mib": 256},
    )
    worker = workers.start(cluster)
    run = in_its_image(
        stack.url, write(tmp_path / "src", {"stubborn.py": STUBBORN}), "stubborn.py", cluster
    )
    wait_for_status(stack, run.id, {"Running"}, 60)
    wait_until(lambda: "tick" in stack.client().logs(run.id), 20, 0.1, what="output")
    assert containers_of(run.id) != []

    worker.send_signal(signal.SIGTERM)
    if signals == 2:
        wait_until(lambda: "got SIGTERM" in stack.client().logs(run.id), 20, 0.1, what="SIGTERM")
        worker.send_signal(signal.SIGTERM)
    # The bound: grace + 10 s; a second signal skips the grace period.
    worker.wait((grace if signals == 1 else 0) + 10)

    record = stack.client().get_run(run.id, fresh=True)
    assert (record["status"], record["failure_reason"]) == ("Failed", "service stopped")
    assert "got SIGTERM" in stack.client().logs(run.id)
    assert containers_of(run.id) == []


def test_stdout_and_stderr_keep_the_order_the_script_wrote_them_in(
    stack: Stack, workers, run_image: str, tmp_path: Path
) -> None:
    """Seen: a Docker run's log interleaved its stdout and stderr out of order."""
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster)
    script = (
        "import sys\n"
        "for i in range(300):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
    )
    run = in_its_image(stack.url, write(tmp_path / "src", {"both.py": script}), "both.py", cluster)
    run.wait_for_completion()
    log = run.get_details_with_logs()["logFiles"]["user_logs/std_log.txt"]
    written = [line for line in log.splitlines() if line.startswith(("out ", "err "))]
    assert written == [f"{kind} {i}" for i in range(300) for kind in ("out", "err")]
