"""``runyard token create|list|revoke``, ``runyard whoami`` and ``runyard audit``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Optional

import typer

from protocol.roles import ROLES
from runyard.cli import output
from runyard.cli.context import client
from runyard.cli.help import Command, Group
from runyard.cli.paging import PageCursor, PageLimit, next_page_hint
from runyard.errors import InvalidInput

app = typer.Typer(
    cls=Group, help="Create, list and revoke API tokens (admins).", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
ROLE_HELP = f"{', '.join(ROLES[:-1])} or {ROLES[-1]}"  # admin, member, viewer or worker
TOKEN_COLUMNS = [
    ("id", "ID"),
    ("name", "NAME"),
    ("role", "ROLE"),
    ("clusters", "CLUSTERS"),
    ("created_by", "CREATED BY"),
    ("created_at", "CREATED"),
    ("expires_at", "EXPIRES"),
    ("last_used_at", "LAST USED"),
    ("revoked_at", "REVOKED"),
]


def parse_expiry(text: str) -> datetime:
    """``30d``, ``12h``, ``90m`` from now, or an ISO date/time (UTC unless it says)."""
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--expires {text!r}: give a duration like 30d, 12h, 90m or an ISO date",
            field="expires",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("create", cls=Command)
def create(
    role: Annotated[str, typer.Option(help=ROLE_HELP)],
    name: Annotated[Optional[str], typer.Option(help="Who or what holds it")] = None,
    cluster: Annotated[
        Optional[list[str]],
        typer.Option("--cluster", help="Worker tokens: a cluster it serves (repeat; '*' = all)"),
    ] = None,
    expires: Annotated[
        Optional[str], typer.Option(help="30d, 12h, 90m, or an ISO date (default: never)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed once and cannot be shown again."""
    spec = {
        "name": name or f"{role}-token",
        "role": role,
        "clusters": cluster or [],
        "expires_at": parse_expiry(expires).isoformat() if expires else None,
    }
    created = client().create_token(**spec)
    if as_json:
        output.emit_json(created)
        return
    output.table([created], [*TOKEN_COLUMNS[:4], ("expires_at", "EXPIRES")])
    output.console.print(f"token: {created['token']}", highlight=False, soft_wrap=True)
    output.errors.print("Store it now: it is not shown again.", highlight=False)


@app.command("list", cls=Command)
def list_tokens(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked")] = False,
    limit: PageLimit = None,
    cursor: PageCursor = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens (never their secrets), oldest first: every page, or with --limit or
    --cursor one page and how to see the next."""
    api = client()
    if limit is None and cursor is None:
        rows = api.list_tokens(include_revoked=include_revoked)
        page: dict = {"data": rows, "next_cursor": None}
    else:
        page = api.tokens_page(include_revoked=include_revoked, limit=limit, cursor=cursor)
        rows = page["data"]
    if as_json:
        output.emit_json(rows)
        return
    output.table(rows, TOKEN_COLUMNS, empty="no tokens")
    next_page_hint(page)


@app.command("revoke", cls=Command)
def revoke(token_id: str, as_json: JsonOpt = False) -> None:
    """Revoke a token (and its Studio sessions): refused from the next request on."""
    revoked = client().revoke_token(token_id)
    if as_json:
        output.emit_json(revoked)
    else:
        output.console.print(f"revoked {revoked['id']} ({revoked['name']})")


def whoami(as_json: JsonOpt = False) -> None:
    """Show who the configured token is: name, role, clusters."""
    me = client().whoami()
    if as_json:
        output.emit_json(me)
    else:
        output.table(
            [me],
            [("name", "NAME"), ("role", "ROLE"), ("token_id", "TOKEN"), ("clusters", "CLUSTERS")],
        )


def audit(
    actor: Annotated[Optional[str], typer.Option(help="Only this token name")] = None,
    action: Annotated[Optional[str], typer.Option(help="e.g. run.submit, token.revoke")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The audit log (admins): submissions, cancels, cluster and token changes."""
    rows = client().audit(actor=actor, action=action, limit=limit)
    if as_json:
        output.emit_json(rows)
    else:
        output.table(
            rows,
            [
                ("at", "WHEN"),
                ("actor", "WHO"),
                ("action", "ACTION"),
                ("target", "TARGET"),
                ("detail", "DETAIL"),
            ],
            empty="no audit entries" + (" matching those filters" if actor or action else ""),
        )
