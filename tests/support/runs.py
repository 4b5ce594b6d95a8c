"""Helpers the end-to-end tests share: script folders, environments, submitting a run as a
user would, and reading its status back through the API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Final, Literal

from runyard.core import Environment, Experiment, Run, ScriptRunConfig, Workspace
from runyard.core.conda_dependencies import CondaDependencies
from tests.support.services import Stack, wait_until

# ``submit(..., environment=CLUSTERS_OWN)``: the run names no environment and takes its
# cluster's (on a Docker cluster, the cluster's image).
CLUSTERS_OWN: Final = "the cluster's own"


def write(folder: Path, files: dict[str, str]) -> Path:
    """A script folder with these files (names may contain sub-folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def service_lines(log: str) -> list[str]:
    """The lines Runyard itself wrote into a run's log (what happened around the script)."""
    return [line for line in log.splitlines() if line.startswith("[runyard] ")]


def first_script_line(stream: IO[str]) -> str:
    """The first line a followed log shows of the script itself, past Runyard's own lines
    about preparing it (read as they stream in, so it returns once the script printed)."""
    for line in stream:
        if not line.startswith("[runyard] "):
            return line
    return ""


def local_env() -> Environment:
    """A user-managed environment running this very Python (which has Runyard installed)."""
    env = Environment("local-python")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = sys.executable
    return env


def packages_environment(
    name: str,
    pip_packages: list[str],
    conda_packages: list[str] | None = None,
    python_version: str | None = None,
) -> Environment:
    """An environment that names packages for the worker to build, as AML code makes one."""
    environment = Environment(name)
    environment.python.conda_dependencies = CondaDependencies.create(
        pip_packages=pip_packages, conda_packages=conda_packages, python_version=python_version
    )
    return environment


def submit(
    url: str,
    folder: Path,
    script: str,
    cluster: str,
    *args: str,
    experiment: str = "e2e",
    priority: int = 0,
    environment: Environment | Literal["the cluster's own"] | None = None,
) -> Run:
    """Submit through the SDK, as a user would: in ``environment`` if given, in none with
    ``CLUSTERS_OWN``, and by default in the local environment (this very Python)."""
    if environment is None:
        environment = local_env()
    config = ScriptRunConfig(
        source_directory=folder,
        script=script,
        arguments=list(args),
        compute_target=cluster,
        environment=None if environment == CLUSTERS_OWN else environment,
        priority=priority,
    )
    return Experiment(Workspace(url=url), experiment).submit(config)


def status_of(stack: Stack, run_id: str) -> str:
    """The run's status as the API reports it now."""
    return stack.client().get_run(run_id)["status"]


def wait_for_status(stack: Stack, run_id: str, wanted: set[str], timeout: float = 30) -> dict:
    """The run as the API reports it, once its status is one of ``wanted``."""
    client = stack.client()

    def reached() -> dict | None:
        run = client.get_run(run_id)
        return run if run["status"] in wanted else None

    return wait_until(reached, timeout, 0.05, what=f"{run_id} to reach {wanted}")  # type: ignore[return-value]
