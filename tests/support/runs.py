"""Helpers the end-to-end tests share: script folders and environments."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from runyard.core import Environment, Experiment, Run, ScriptRunConfig, Workspace


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


def submit(
    url: str,
    folder: Path,
    script: str,
    cluster: str,
    *args: str,
    experiment: str = "e2e",
    priority: int = 0,
    environment: Environment | None = None,
) -> Run:
    """Submit through the SDK, as a user would; by default with the local environment."""
    config = ScriptRunConfig(
        source_directory=folder,
        script=script,
        arguments=list(args),
        compute_target=cluster,
        environment=environment or local_env(),
        priority=priority,
    )
    return Experiment(Workspace(url=url), experiment).submit(config)
