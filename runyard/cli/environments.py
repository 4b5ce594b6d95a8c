"""``runyard env list`` and ``runyard env show``: registered environments for operators.

The group (``env_app``) also takes the build and cache commands (``runyard env build``,
``runyard env prune``), which live in their own modules.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from runyard.cli import output
from runyard.cli.context import client
from runyard.cli.help import Command, Group
from runyard.cli.paging import PageCursor, PageLimit, next_page_hint

env_app = typer.Typer(
    cls=Group,
    help="Registered environments: list them, show one (its packages and spec hash).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
LIST_COLUMNS = [
    ("name", "ENVIRONMENT"),
    ("version", "LATEST"),
    ("spec_hash", "SPEC HASH"),
    ("created_at", "CREATED"),
    ("created_by", "BY"),
]


@env_app.command("list", cls=Command)
def list_environments(
    limit: PageLimit = None, cursor: PageCursor = None, as_json: JsonOpt = False
) -> None:
    """List registered environments: the latest version of each, its spec hash, when.
    Every page, or with --limit or --cursor one page and how to see the next."""
    api = client()
    if limit is None and cursor is None:
        environments = api.list_environments()
        page: dict = {"data": environments, "next_cursor": None}
    else:
        page = api.environments_page(limit=limit, cursor=cursor)
        environments = page["data"]
    if as_json:
        output.emit_json(environments)
        return
    output.table(environments, LIST_COLUMNS, empty="no registered environments")
    next_page_hint(page)


@env_app.command("show", cls=Command)
def show(
    name: str,
    version: Annotated[
        Optional[int], typer.Option("--version", "-v", min=1, help="A version (default: latest)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a registered environment: its requirements, spec hash and spec.

    The requirements are normalized, as a build installs them.

    Example: runyard env show train-env --version 2
    """
    data = client().get_environment(name, version)
    if as_json:
        output.emit_json(data)
        return
    for key in ("name", "version", "spec_hash", "python_version", "created_at", "created_by"):
        _line(key, data.get(key))
    _line("requirements", None if data.get("requirements") else "none (nothing to install)")
    for requirement in data.get("requirements") or []:
        output.console.print(f"  {output.printable(requirement)}", highlight=False)
    _line("spec", None)
    for text in json.dumps(data.get("spec"), indent=2).splitlines():
        output.console.print(f"  {output.printable(text)}", highlight=False)


def _line(key: str, value: Any) -> None:
    line = Text(f"{key:15}" if value is not None else key, style="bold")
    if value is not None:
        line.append(f" {output.cell(value)}")
    output.console.print(line, highlight=False)
