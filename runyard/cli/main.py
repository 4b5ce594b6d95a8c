"""The ``runyard`` command: one entry point, errors as one line and an exit code."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.exceptions import TyperException

from runyard.cli import (
    arrays,
    clusters,
    environment_builds,
    environment_cache,
    output,
    runs,
    service,
    tokens,
    usage,
)
from runyard.cli.context import set_url
from runyard.cli.environments import env_app
from runyard.cli.help import Command, Group
from runyard.errors import RunyardError
from runyard.tracking import contract

app = typer.Typer(
    cls=Group,
    name="runyard",
    help="Queue ML training runs on named compute clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    url: Annotated[
        Optional[str],
        typer.Option("--url", envvar=contract.URL, help="Runyard API URL"),
    ] = None,
) -> None:
    set_url(url)


app.command("up", cls=Command)(service.up)
app.command("api", cls=Command)(service.api)
app.command("scheduler", cls=Command)(service.scheduler)
worker_app = typer.Typer(
    cls=Group, invoke_without_command=True, help="Serve clusters' queues (or drain a worker)."
)
worker_app.callback()(service.worker)
worker_app.command("drain", cls=Command)(runs.drain)
app.add_typer(worker_app, name="worker")
app.command("flower", cls=Command)(service.flower)
app.command("status", cls=Command)(runs.status)
app.command("clusters", cls=Command)(clusters.list_clusters)
app.add_typer(clusters.app, name="cluster")
app.command("submit", cls=Command)(runs.submit)
app.command("submit-array", cls=Command)(arrays.submit_array)
app.command("runs", cls=Command)(runs.runs)
app.command("show", cls=Command)(runs.show)
app.command("logs", cls=Command)(runs.logs)
app.command("wait", cls=Command)(runs.wait)
app.command("cancel", cls=Command)(runs.cancel)
app.command("workers", cls=Command)(runs.workers)
app.add_typer(tokens.app, name="token")
env_app.command("build", cls=Command)(environment_builds.build)
env_app.command("prune", cls=Command)(environment_cache.prune)
app.add_typer(env_app, name="env")
app.command("whoami", cls=Command)(tokens.whoami)
app.command("audit", cls=Command)(tokens.audit)
app.command("usage", cls=Command)(usage.usage)


def main() -> None:
    """Run the CLI; every failure is one line on stderr and an exit code (see errors.py)."""
    try:
        code = app(standalone_mode=False)
    except RunyardError as exc:
        output.fail(exc.message)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except TyperException as exc:  # usage errors: a missing argument, an unknown command
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if not message.strip():  # help was printed instead (no command given)
            sys.exit(2)
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        output.fail(f"{message}{hint}")
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
