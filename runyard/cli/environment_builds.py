"""``runyard env build``: build an environment on a cluster ahead of any run.

The environment is a registered one (NAME, NAME:VERSION or ``--version``) or one described
in a file (``--file env.yml``, the shape ``submit --env-file`` reads). The build is a run:
``--wait`` streams its log, then prints what was built, and exits 0 only if it succeeded.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.text import Text

from runyard.cli import environment_file, environment_used, outcome, output
from runyard.cli.context import client
from runyard.core import Environment, Workspace
from runyard.core.environment_builds import EnvironmentBuild
from runyard.core.environment_builds import build as build_environment
from runyard.errors import InvalidInput


def build(
    name: Annotated[
        Optional[str],
        typer.Argument(help="A registered environment: NAME or NAME:VERSION", metavar="NAME"),
    ] = None,
    file: Annotated[
        Optional[str],
        typer.Option(
            "--file", "-f", metavar="FILE", help="The environment as JSON or YAML, instead"
        ),
    ] = None,
    version: Annotated[
        Optional[str], typer.Option("--version", "-v", help="Version of NAME (default: latest)")
    ] = None,
    cluster: Annotated[
        Optional[str],
        typer.Option("--cluster", "-c", help="Cluster that builds it (none: the default)"),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", "-w", help="Stream the build log until it ends; exit 0 only if it succeeded"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Build an environment on a cluster ahead of any run (Azure's env.build(ws)).

    Example: runyard env build --file env.yml --cluster cpu --wait
    """
    api = client()
    workspace = Workspace(url=api.base_url)
    workspace._client = api
    environment = _environment(workspace, name, file, version)
    started = build_environment(environment, workspace, cluster)
    if not wait:
        _print_queued(started, as_json)
        return
    if not as_json:
        output.errors.print(
            Text(f"building {started.details.get('display_name')} as run {started.run_id}"),
            highlight=False,
            soft_wrap=True,
        )
    run = outcome.wait_for_end(api, started.run_id, None if as_json else sys.stdout.write)
    if as_json:
        output.emit_json(run)
    elif run.get("environment_used"):
        environment_used.print_rows(run["environment_used"])
    raise typer.Exit(outcome.report(run))


def _environment(
    workspace: Workspace, name: Optional[str], file: Optional[str], version: Optional[str]
) -> Environment:
    """The environment the arguments name: a file, or a registered one."""
    if (name is None) == (file is None):
        raise InvalidInput("name a registered environment (NAME) or give --file FILE, not both")
    if file is not None:
        if version is not None:
            raise InvalidInput("--version goes with NAME; a --file says its own version")
        return environment_file.load(file)
    assert name is not None
    if ":" in name:
        if version is not None:
            raise InvalidInput(f"{name} names a version already; drop --version")
        name, version = name.split(":", 1)
    return Environment.get(workspace, name, version)


def _print_queued(started: EnvironmentBuild, as_json: bool) -> None:
    data = started.details
    if as_json:
        output.emit_json(data)
        return
    reason = f" ({data['pending_reason']})" if data.get("pending_reason") else ""
    line = f"{started.run_id}  {data.get('status')}{reason}  {data.get('display_name')}"
    output.console.print(output.printable(line), highlight=False)
