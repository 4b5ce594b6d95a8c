"""What ``runyard submit`` and ``runyard submit-array`` both take, declared once: the
options that say what to run and where, and how they become an environment, a workspace
and tags (an option added to one command is then added to both alike)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from runyard.cli import environment_file
from runyard.client import Client
from runyard.core import Environment, Workspace

Directory = Annotated[str, typer.Argument(help="Folder to snapshot", metavar="DIR")]
Script = Annotated[str, typer.Option("--script", "-s", help="Entry script, inside DIR")]
Cluster = Annotated[
    Optional[str],
    typer.Option("--cluster", "-c", help="Cluster to run on (none: the default cluster)"),
]
ExperimentName = Annotated[str, typer.Option("--experiment", "-e")]
Priority = Annotated[int, typer.Option("--priority", "-p", help="Higher starts first")]
Team = Annotated[
    Optional[str],
    typer.Option("--team", help="Team charged for the runs (none: your token's default team)"),
]
NonPreemptible = Annotated[
    bool,
    typer.Option(
        "--non-preemptible",
        help="Never preempted (then it runs only within its team's quota, never borrowing)",
    ),
]
Image = Annotated[
    Optional[str], typer.Option(help="Docker image to run in (environment.docker.base_image)")
]
EnvFile = Annotated[
    Optional[str],
    typer.Option(
        "--env-file",
        metavar="FILE",
        help="Environment as JSON or YAML (name, python, docker, environment_variables)",
    ),
]
Interpreter = Annotated[
    Optional[str], typer.Option(help="Python to run with (user-managed environment)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]


def environment(env_file: str | None, interpreter: str | None, image: str | None) -> Environment:
    """The runs' environment: the file's (or a plain one), with the interpreter and the
    image given on the command line over it."""
    env = environment_file.load(env_file) if env_file else Environment("cli")
    if interpreter:
        env.python.user_managed_dependencies = True
        env.python.interpreter_path = interpreter
    if image:
        env.docker.base_image = image
    return env


def workspace(api: Client) -> Workspace:
    """A workspace that submits through the CLI's own client (its URL and token)."""
    found = Workspace(url=api.base_url)
    found._client = api
    return found


def tags(given: list[str] | None) -> dict[str, str | None] | None:
    """``KEY=VALUE`` (or ``KEY``, no value) options as a dict; None when none was given."""
    parsed = dict(t.split("=", 1) if "=" in t else (t, None) for t in given or [])
    return parsed or None
