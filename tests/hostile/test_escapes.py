"""A run tries to outlive itself or take more of its host than its cluster gives it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from tests.hostile.conftest import Target
from tests.support.runs import submit, write
from tests.support.services import process_alive, unique, wait_until


@pytest.mark.parametrize("target", ["local"], indirect=True)
def test_a_process_that_forks_away_from_the_run_ends_with_it(target: Target, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A double fork with ``setsid`` leaves the run's process group: it is found by the
    run's id all the same and killed when the run ends."""
    pid_file = tmp_path / "escaped.pid"
    script = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(1)\n"
        "print('parent done')\n"
    )
    run = target.submit(script)
    assert run.wait_for_completion()["status"] == "Completed"
    escaped = int(pid_file.read_text())  # killed when the script ended: waited to die
    wait_until(lambda: not process_alive(escaped), 10, what="the escaped process to die")
    target.assert_still_serving()


@pytest.mark.parametrize("target", ["docker"], indirect=True)
def test_shared_memory_is_capped_by_the_cluster(target: Target) -> None:
    """Seen: the run's docker.shm_size overrode the cluster's."""
    target.confine(shm_mib=64)
    env = Environment("big-shm")
    env.docker.shm_size = "8g"
    probe = "import os\ns = os.statvfs('/dev/shm')\nprint('shm', s.f_blocks * s.f_frsize)\n"
    write(target.folder, {"shm.py": probe})
    run = submit(
        target.stack.url,
        target.folder,
        "shm.py",
        target.cluster,
        experiment="hostile",
        environment=env,
    )
    run.wait_for_completion()
    assert f"shm {64 * 1024 * 1024}" in target.stack.client().logs(run.id)
    target.assert_still_serving()


@pytest.mark.parametrize("target", ["docker"], indirect=True)
def test_filling_tmp_fills_only_the_runs_own_tmpfs(target: Target) -> None:
    target.confine(tmp_mib=16)
    script = (
        "import errno\n"
        "written = 0\n"
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'z' * (1 << 20))\n"
        "            f.flush()\n"
        "            written += 1\n"
        "except OSError as exc:\n"
        "    print('full after', written, 'MiB:', errno.errorcode[exc.errno])\n"
    )
    run = target.submit(script)
    assert run.wait_for_completion()["status"] == "Completed"
    log = target.stack.client().logs(run.id)
    assert "ENOSPC" in log and int(log.split("full after ")[1].split()[0]) <= 16
    target.assert_still_serving()


PEEK = """\
import os
found = {}
for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        environ = open(f'/proc/{pid}/environ', 'rb').read()
    except OSError:
        continue
    if b'RUNYARD_REDIS_URL=' in environ or b'RUNYARD_BOOTSTRAP_ADMIN_TOKEN=' in environ:
        found[pid] = True
try:
    open(SECRET).read()
    secret = 'read'
except OSError as exc:
    secret = type(exc).__name__
print('service environments read:', len(found), 'secret:', secret)
"""


def test_a_local_run_as_its_own_user_reads_no_service_credential(
    stack,
    workers,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Seen: a local-executor run read the worker's environment (Redis URL, tokens) through
    /proc. Runs as their own user (RUNYARD_RUN_AS) can read neither that nor the service's
    files; the same script as the worker's user shows the attack."""
    secret = stack.root / "data" / "secret_key"
    runs_home = Path(tempfile.mkdtemp(prefix="runyard-runs-"))  # outside pytest's 0700 tmp
    runs_home.chmod(0o711)
    cluster = unique("own-user")
    stack.client().create_cluster(cluster, nodes=1)
    try:
        workers.start(
            cluster, env={"RUNYARD_RUN_AS": "65534:65534", "RUNYARD_WORK_DIR": str(runs_home)}
        )
        env = Environment("system-python")  # /usr/bin/python3: the runs' user can start it
        env.python.user_managed_dependencies = True
        env.python.interpreter_path = "/usr/bin/python3"
        write(tmp_path / "src", {"peek.py": f"SECRET = {str(secret)!r}\n" + PEEK})
        config = ScriptRunConfig(
            source_directory=tmp_path / "src", script="peek.py", compute_target=cluster,
            environment=env,
        )  # fmt: skip
        run = Experiment(Workspace(url=stack.url), "hostile").submit(config)
        assert run.wait_for_completion()["status"] == "Completed"
        assert "service environments read: 0 secret: PermissionError" in stack.client().logs(run.id)
        shared = unique("same-user")  # the attack, where runs are the worker's user
        stack.client().create_cluster(shared, nodes=1)
        workers.start(shared)
        config.run_config.target = shared
        exposed = Experiment(Workspace(url=stack.url), "hostile").submit(config)
        exposed.wait_for_completion()
        assert "secret: read" in stack.client().logs(exposed.id)
    finally:
        shutil.rmtree(runs_home, ignore_errors=True)
