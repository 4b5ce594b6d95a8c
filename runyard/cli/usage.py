"""``runyard usage``: slot- and GPU-hours the runs' attempts held, per team, user, cluster
and day, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import sys
from typing import Annotated, Any, Optional

import typer

from runyard.cli import output
from runyard.cli.context import client
from runyard.errors import InvalidInput

HEADERS = {"team": "TEAM", "user": "USER", "cluster": "CLUSTER", "day": "DAY"}
FIGURES = ("attempts", "slot_seconds", "slot_hours", "gpu_seconds", "gpu_hours")
NO_TEAM_SHOWN = "(no team)"


def usage(
    since: Annotated[
        str,
        typer.Option(
            help="Start: an age (30d, 12h, 90m, 2w), a date or a date and time", metavar="WHEN"
        ),
    ] = "30d",
    until: Annotated[
        Optional[str], typer.Option(help="End, as --since; default: now", metavar="WHEN")
    ] = None,
    by: Annotated[
        Optional[list[str]],
        typer.Option(
            "--by",
            help="Group by team, user, cluster or day (repeat; default: team)",
            metavar="GROUP",
        ),
    ] = None,
    cluster: Annotated[
        Optional[str], typer.Option(help="Only this cluster", metavar="NAME")
    ] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team", metavar="NAME")] = None,
    user: Annotated[
        Optional[str], typer.Option(help="Only runs this token submitted", metavar="NAME")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV for spreadsheets")] = False,
) -> None:
    """Slot- and GPU-hours the runs' attempts held in a period (requeued attempts
    included, running ones up to now, midnight splitting days)."""
    if as_json and as_csv:
        raise InvalidInput("choose one of --json and --csv")
    report = client().usage(since=since, until=until, by=by, cluster=cluster, team=team, user=user)
    groups: list[str] = report["by"]
    if as_json:
        output.emit_json(report)
    elif as_csv:
        write_csv(groups, report["data"])
    else:
        show_table(groups, report)


def write_csv(groups: list[str], rows: list[dict[str, Any]]) -> None:
    """One line per group: its keys, then the figures (seconds and hours, unrounded)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([*groups, *FIGURES])
    for row in rows:
        writer.writerow([_csv_cell(row.get(g)) for g in groups] + [row[f] for f in FIGURES])


def show_table(groups: list[str], report: dict[str, Any]) -> None:
    columns = [(g, HEADERS[g]) for g in groups] + [
        ("attempts", "ATTEMPTS"),
        ("slot_hours", "SLOT-HOURS"),
        ("gpu_hours", "GPU-HOURS"),
        ("slot_seconds", "SLOT-SECONDS"),
        ("gpu_seconds", "GPU-SECONDS"),
    ]
    since, until = (output.cell(report[k]) for k in ("since", "until"))
    title = f"usage {since} .. {until} UTC"
    if not report["data"]:
        output.table([], columns, title=title, empty="no run held a slot in that period")
        return
    rows = [_shown(row, groups) for row in report["data"]]
    if len(rows) > 1 and groups:
        rows.append(_shown({**report["total"], groups[0]: "total"}, groups))
    output.table(rows, columns, title=title)


def _shown(row: dict[str, Any], groups: list[str]) -> dict[str, Any]:
    shown = dict(row)
    if "team" in groups and row.get("team") == "":
        shown["team"] = NO_TEAM_SHOWN
    for key in ("slot_hours", "gpu_hours"):
        shown[key] = f"{row[key]:,.2f}"
    for key in ("slot_seconds", "gpu_seconds"):
        shown[key] = f"{row[key]:,.0f}"
    return shown


def _csv_cell(value: Any) -> Any:
    return "" if value is None else value
