"""The executor interface: everything the run orchestration needs from a place to run code."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.environments import EXECUTORS

# What an executor raises, importable beside the interface it implements.
from runyard.errors import ExecutionFailed, ExecutorUnavailable  # noqa: F401

if TYPE_CHECKING:
    from worker.environments.build_log import BuildLog
    from worker.environments.config import BuildConfig
    from worker.environments.locks import Pin


@dataclass(frozen=True)
class Node:
    """This worker, as executors need to know it."""

    worker_id: str
    sdk_dir: Path | None = None  # a copy of the runyard package, mounted into containers
    # Which deployment the worker belongs to (its broker, hashed): containers are labelled
    # with it, so a worker only ever removes its own deployment's leftovers.
    service: str = ""
    # "uid[:gid]" local-executor runs execute as (None: the worker's own user); another
    # user cannot read the worker's /proc, environment or files.
    run_as: str | None = None
    # What this worker agrees to run. A worker holding the Docker socket should say
    # ("docker",): a message asking it for a host process is then refused.
    executors: tuple[str, ...] = EXECUTORS
    # Where built environments are cached and how builds are bounded (worker.environments);
    # None: the settings' defaults, read when a run first needs a build.
    builds: BuildConfig | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ExecutionRequest:
    run_id: str
    script: str
    arguments: list[str]
    environment: dict[str, Any]
    working_dir: Path  # the run's private copy of its snapshot; becomes the process's cwd
    tracking_dir: Path  # the run's channel (RUNYARD_TRACKING_DIR)
    # Variables the worker adds for the run's tracking context (RUNYARD_RUN_ID, ...).
    context_env: dict[str, str] = field(default_factory=dict)
    container: dict[str, Any] = field(default_factory=dict)  # the cluster's ContainerPolicy
    gpu_ids: list[str] = field(default_factory=list)  # the GPUs of the slot running it
    # Writes one line of the service's own into the run's log (``RunReporter.note``): what
    # the executor did before the script started, so the log always says what happened.
    note: Callable[[str], None] = field(default=lambda line: None, compare=False)
    # True once the run is canceled: a long part of Preparing (an environment's build)
    # looks at it while it waits, and stops.
    canceled: Callable[[], bool] = field(default=lambda: False, compare=False)


class Execution(ABC):
    """A started run: its output, its exit, and a way to stop it."""

    #: What a restarted worker needs to find this execution again (a pid, a container id).
    handle: str = ""

    @abstractmethod
    def output(self) -> Iterator[str]:
        """Combined stdout/stderr as text pieces, ending when the process's output closes."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds; the exit code, or None if still running."""

    @abstractmethod
    def terminate(self, grace_seconds: float) -> int:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code."""

    @abstractmethod
    def kill_remaining(self) -> None:
        """After the main process exits: stop anything it left behind (Slurm does the same)."""

    def kill(self) -> None:
        """Stop it at once, no grace, leaving nothing behind (the worker is exiting now)."""
        self.terminate(0)

    def failure_reason(self, exit_code: int) -> str | None:
        """A better reason than the exit code, when the executor knows one (OOM, ...)."""
        return None

    def cleanup(self) -> None:  # noqa: B027 (optional hook)
        """Release what the execution holds (a container, for instance)."""


class Executor(ABC):
    name: str = ""

    def __init__(self, node: Node) -> None:
        self.node = node
        # Set by prepare: what the run got ("EnvironmentUsed", sent with STARTING), and
        # the log of the environment's build, when one was looked for.
        self.environment_used: dict[str, Any] | None = None
        self.build_log: BuildLog | None = None
        self._pin: Pin | None = None  # the run's hold on its built environment

    def prepare(self, request: ExecutionRequest) -> None:  # noqa: B027 (optional hook)
        """Work of the Preparing state (an image to pull); raise ExecutionFailed."""

    def release(self) -> None:
        """The run is over: its built environment may be evicted again."""
        if self._pin is not None:
            self._pin.release()
            self._pin = None

    @abstractmethod
    def start(self, request: ExecutionRequest) -> Execution:
        """Start the run's process; raise ExecutionFailed when it cannot start."""

    @abstractmethod
    def kill_leftover(self, run_id: str, handle: str) -> None:
        """Stop what a previous life of this worker left running for ``run_id``."""


def hand_over(folder: Path, user: str) -> None:
    """Make a run's folders its user's, before the run starts (the worker made them: while
    they are its own, walking them by path is safe)."""
    uid, _, gid = user.partition(":")
    owner, group = int(uid), int(gid or uid)
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            if os.geteuid() == 0:
                os.lchown(path, owner, group)
            elif not os.path.islink(path):
                os.chmod(path, 0o777 if os.path.isdir(path) else 0o666)
    if os.geteuid() == 0:
        os.lchown(folder, owner, group)
    else:
        os.chmod(folder, 0o777)
