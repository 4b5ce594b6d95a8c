"""The transaction rule (docs/architecture.md, "Transactions"): services never commit; the
route, loop or task that owns the unit of work does. Read from the source, so a service
that starts committing again is caught even where no test drives that path; and no route
module imports another (what routes share lives outside ``api/routes``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The owners: store.db.session_scope (a unit of work as a context manager), the scheduler
# loop's units of work (scheduler/service.py) and the routes. Everything else only flushes.
SERVICES = sorted(
    [p for p in (ROOT / "store").rglob("*.py") if p.name != "db.py" and "migrations" not in p.parts]
    + [ROOT / "scheduler" / name for name in ("admission.py", "watchdog.py", "ingest.py")]
)


def commits(path: Path) -> list[int]:
    """Lines that call ``.commit()`` or ``.rollback()`` on anything."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("commit", "rollback")
    ]


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_service_never_commits(path: Path) -> None:
    assert commits(path) == []


def test_the_check_itself_finds_a_commit() -> None:
    """Without this, a check that never matches would pass every test above."""
    assert commits(ROOT / "store" / "db.py") != []  # session_scope, an owner


@pytest.mark.parametrize(
    "path", sorted((ROOT / "api" / "routes").glob("*.py")), ids=lambda p: p.name
)
def test_no_route_module_imports_another(path: Path) -> None:
    imported = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not {m for m in imported if m.startswith("api.routes")}
