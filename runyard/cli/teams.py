"""``runyard team create|list|show|delete|add-member|remove-member|quota``."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from runyard.cli import output
from runyard.cli.context import client
from runyard.cli.help import Command, Group
from runyard.errors import InvalidInput

app = typer.Typer(
    cls=Group,
    help="Teams: who shares clusters, and each team's quota on them (admins change them).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
TEAM_COLUMNS = [
    ("name", "TEAM"),
    ("description", "DESCRIPTION"),
    ("members", "MEMBERS"),
    ("quota_summary", "QUOTAS"),
]
QUOTA_COLUMNS = [
    ("cluster", "CLUSTER"),
    ("team", "TEAM"),
    ("slots", "SLOTS"),
    ("gpus", "GPUS"),
    ("borrowing_slots", "BORROW SLOTS"),
    ("borrowing_gpus", "BORROW GPUS"),
    ("lending_slots", "LEND SLOTS"),
    ("lending_gpus", "LEND GPUS"),
]


def _summary(team: dict[str, Any]) -> str:
    """``gpu=4, cpu=8``: each cluster and the team's nominal slots there."""
    return ", ".join(f"{q['cluster']}={q['slots']}" for q in team.get("quotas") or [])


def _print(team: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.emit_json(team)
        return
    output.table([{**team, "quota_summary": _summary(team)}], TEAM_COLUMNS)
    output.table(
        team.get("quotas") or [], QUOTA_COLUMNS, empty=f"team {team['name']} has no quotas"
    )


@app.command("create", cls=Command)
def create(
    name: str,
    description: Annotated[str, typer.Option(help="Free text")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a team. Example: runyard team create vision --description 'CV group'"""
    _print(client().create_team(name, description), as_json)


@app.command("list", cls=Command)
def list_teams(as_json: JsonOpt = False) -> None:
    """List teams with their members and their quota (slots) on each cluster."""
    teams = client().list_teams()
    if as_json:
        output.emit_json(teams)
        return
    rows = [{**t, "quota_summary": _summary(t)} for t in teams]
    output.table(rows, TEAM_COLUMNS, empty="no teams")


@app.command("show", cls=Command)
def show(name: str, as_json: JsonOpt = False) -> None:
    """Show a team, its members and its quotas."""
    _print(client().get_team(name), as_json)


@app.command("delete", cls=Command)
def delete(name: str, as_json: JsonOpt = False) -> None:
    """Delete a team (refused while runs charged to it are queued or active)."""
    deleted = client().delete_team(name)
    if as_json:
        output.emit_json(deleted)
    else:
        output.console.print(f"deleted team {name}", highlight=False)


@app.command("add-member", cls=Command)
def add_member(
    team: str,
    token: Annotated[str, typer.Argument(help="Token id, or name (when one token has it)")],
    default: Annotated[
        bool,
        typer.Option("--default", help="Make this the token's default team (its first is)"),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Put a token in a team; its runs may then be charged to the team."""
    changed = client().add_team_member(team, token, default=True if default else None)
    if as_json:
        output.emit_json(changed)
    else:
        output.console.print(f"team {team}: {', '.join(changed['members'])}", highlight=False)


@app.command("remove-member", cls=Command)
def remove_member(
    team: str,
    token: Annotated[str, typer.Argument(help="Token id, or name")],
    as_json: JsonOpt = False,
) -> None:
    """Take a token out of a team."""
    changed = client().remove_team_member(team, token)
    if as_json:
        output.emit_json(changed)
    else:
        members = ", ".join(changed["members"]) or "no members"
        output.console.print(f"team {team}: {members}", highlight=False)


@app.command("quota", cls=Command)
def quota(
    team: str,
    cluster: str,
    slots: Annotated[Optional[int], typer.Option(min=0, help="Nominal quota: slots")] = None,
    gpus: Annotated[Optional[int], typer.Option(min=0, help="Nominal quota: GPUs")] = None,
    borrowing_limit: Annotated[
        Optional[int],
        typer.Option(min=0, help="Idle slots of other teams it may use (default: any)"),
    ] = None,
    lending_limit: Annotated[
        Optional[int],
        typer.Option(min=0, help="Of its idle slots, how many others may use (default: all)"),
    ] = None,
    borrowing_gpus: Annotated[
        Optional[int], typer.Option(min=0, help="Idle GPUs of others it may use")
    ] = None,
    lending_gpus: Annotated[
        Optional[int], typer.Option(min=0, help="Of its idle GPUs, how many others may use")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove its quota on the cluster")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set a team's quota on a cluster (replacing any it had), or --clear it.

    Example: runyard team quota vision gpu --slots 4 --borrowing-limit 4
    """
    limits = {
        "gpus": gpus,
        "borrowing_slots": borrowing_limit,
        "lending_slots": lending_limit,
        "borrowing_gpus": borrowing_gpus,
        "lending_gpus": lending_gpus,
    }
    api = client()
    if clear:
        if slots is not None or any(v is not None for v in limits.values()):
            raise InvalidInput("--clear takes no --slots or limits")
        changed = api.clear_team_quota(team, cluster)
        if as_json:
            output.emit_json(changed)
        else:
            output.console.print(f"cleared team {team}'s quota on {cluster}", highlight=False)
        return
    if slots is None:
        raise InvalidInput("give --slots N (the team's nominal quota), or --clear")
    settings = {"slots": slots, **{k: v for k, v in limits.items() if v is not None}}
    result = api.set_team_quota(team, cluster, **settings)
    if as_json:
        output.emit_json(result)
    else:
        output.table([result], QUOTA_COLUMNS)
