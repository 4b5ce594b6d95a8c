"""The local executor: the run is a process group on the worker's host (user-managed Python).

The process leads its own session, so cancel reaches every process it spawned; it also
dies with the worker (PR_SET_PDEATHSIG), so a worker killed with SIGKILL leaves no
orphan training on the node.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocol import environments
from protocol.build_specs import BuildSpec, build_spec
from runyard.tracking import contract
from worker.environments.build_log import BuildLog
from worker.environments.config import config_of
from worker.environments.used import Built, environment_used
from worker.executors.base import (
    Execution,
    ExecutionFailed,
    ExecutionRequest,
    Executor,
    hand_over,
)

PR_SET_PDEATHSIG = 1
# The run inherits the worker's environment (a user-managed Python may need its PATH,
# CUDA or conda variables) minus the service's own settings: no broker or database URL
# ever reaches the run.
_WITHHELD_PREFIXES = ("RUNYARD_", "CELERY_")


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class LocalExecution(Execution):
    def __init__(self, process: subprocess.Popen[bytes], run_id: str = "") -> None:
        self.process = process
        self.run_id = run_id
        self.handle = str(process.pid)

    def output(self) -> Iterator[str]:
        assert self.process.stdout is not None
        reader = self.process.stdout
        while True:
            chunk = reader.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                return
            yield chunk.decode("utf-8", errors="replace")

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, grace_seconds: float) -> int:
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        # The leader may be gone while children it spawned linger: kill the group regardless.
        self.kill_remaining()
        return self.process.wait()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill_remaining(self) -> None:
        """The process group, and whatever left it (``setsid``, a double fork) still
        carrying the run's id in its environment."""
        self._signal_group(signal.SIGKILL)
        if self.run_id:
            kill_carriers(self.run_id)

    def cleanup(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()


def interpreter_for(environment: dict) -> str:
    """The run's ``python.interpreter_path`` found on this host; none set means the
    worker's own Python (which has Runyard, so ``Run.get_context()`` works)."""
    given = (environment.get("python") or {}).get("interpreter_path")
    if not given:
        return sys.executable
    found = shutil.which(given)
    if found is None:
        raise ExecutionFailed(
            f"interpreter {given!r} not found on this worker; set "
            "environment.python.interpreter_path"
        )
    return found


def runnable_as(interpreter: str, user: str) -> None:
    """Fail in Preparing, with the fix, when the run's user cannot start the interpreter
    (a virtualenv under /root, say)."""
    uid, _, gid = user.partition(":")
    try:
        done = subprocess.run(
            [interpreter, "-c", "pass"],
            user=int(uid),
            group=int(gid or uid),
            extra_groups=[],
            capture_output=True,
            timeout=30,
            check=False,
        )
        ok = done.returncode == 0
        why = done.stderr.decode(errors="replace").strip()[-200:] or f"exit {done.returncode}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    if not ok:
        raise ExecutionFailed(
            f"interpreter {interpreter!r} cannot be run by user {user} (the runs' user, "
            f"RUNYARD_RUN_AS): {why}; make it and its folders readable to that user, or "
            "set environment.python.interpreter_path"
        )


class LocalExecutor(Executor):
    name = environments.Executor.LOCAL
    interpreter: str | None = None

    def prepare(self, request: ExecutionRequest) -> None:
        given = (request.environment.get("python") or {}).get("interpreter_path")
        request.note(
            f"Looking for interpreter {given!r} on this worker"
            if given
            else "No python.interpreter_path: using the worker's own Python"
        )
        self.interpreter = interpreter_for(request.environment)
        request.note(f"Interpreter: {self.interpreter}")
        spec = build_spec(request.environment)
        built = None
        if spec is not None:
            built = self._venv(request, spec, given=bool(given))
            self.interpreter = str(Path(built.venv or "") / "bin" / "python")
            request.note(f"Interpreter: {self.interpreter} (the environment's venv)")
        self.environment_used = environment_used(request.environment, built)
        if self.node.run_as:
            hand_over(request.working_dir, self.node.run_as)
            hand_over(request.tracking_dir, self.node.run_as)
            runnable_as(self.interpreter, self.node.run_as)
            request.note(f"The run executes as user {self.node.run_as}")

    def _venv(self, request: ExecutionRequest, spec: BuildSpec, given: bool) -> Built:
        """The run's venv from the worker's cache, built first when missing."""
        if spec.dockerfile:
            raise ExecutionFailed(
                "environment.docker.base_dockerfile needs a Docker cluster; this cluster "
                "runs local processes"
            )
        from worker.environments import venvs

        config = config_of(self.node.builds)
        self.build_log = BuildLog(request.note, request.canceled)
        assert self.interpreter is not None
        base = venvs.base_interpreter(spec, self.interpreter, given)
        built, self._pin = venvs.ensure_venv(spec, base, config.cache, config, self.build_log)
        return built

    def start(self, request: ExecutionRequest) -> Execution:
        interpreter = self.interpreter or interpreter_for(request.environment)
        script = request.working_dir / request.script
        if not script.is_file():
            raise ExecutionFailed(f"entry script {request.script!r} is not in the snapshot")
        env = {k: v for k, v in os.environ.items() if not k.startswith(_WITHHELD_PREFIXES)}
        variables = request.environment.get("environment_variables") or {}
        env.update({str(k): str(v) for k, v in variables.items()})
        env.update(request.context_env)
        env[contract.TRACKING_DIR] = str(request.tracking_dir)
        if (self.environment_used or {}).get("venv") and self.node.sdk_dir is not None:
            # A built venv has only its packages: the SDK comes from the worker's copy.
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.node.sdk_dir), env.get("PYTHONPATH")) if p
            )
        if request.gpu_ids:  # the slot's GPUs only
            env["CUDA_VISIBLE_DEVICES"] = ",".join(request.gpu_ids)
        env["PYTHONUNBUFFERED"] = "1"
        user: dict[str, Any] = {}
        if self.node.run_as:
            uid, _, gid = self.node.run_as.partition(":")
            user = {"user": int(uid), "group": int(gid or uid), "extra_groups": []}
            env["HOME"] = str(request.working_dir)  # the worker's home is not the run's
        try:
            process = subprocess.Popen(
                [interpreter, request.script, *request.arguments],
                cwd=request.working_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **user,
            )
        except OSError as exc:
            raise ExecutionFailed(f"cannot start {interpreter}: {exc}") from exc
        request.note(f"Started process {process.pid} in {request.working_dir}")
        return LocalExecution(process, request.run_id)

    def kill_leftover(self, run_id: str, handle: str) -> None:
        """Kill the run's process group: its leader died with the old worker, but what it
        spawned may live on. Only a group that still carries the run's id is touched
        (pids get reused)."""
        try:
            group = int(handle)
        except ValueError:
            return
        if any(_carries_run(pid, run_id) for pid in _group_members(group)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        kill_carriers(run_id)


def kill_carriers(run_id: str) -> None:
    """SIGKILL every process whose environment says it belongs to ``run_id``: what forked
    away from the run's process group (a daemon, a ``setsid``) ends with the run."""
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid != os.getpid() and _carries_run(pid, run_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _group_members(group: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:  # after "pid (comm)": state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def _carries_run(pid: int, run_id: str) -> bool:
    try:
        variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{contract.RUN_ID}={run_id}".encode() in variables
