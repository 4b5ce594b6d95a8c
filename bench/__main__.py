"""Every benchmark, one table: ``python -m bench [--quick] [--only NAME,...] [--skip NAME,...]``.

Each module below exposes ``figures(quick=False)`` returning ``bench.figures.Figure`` rows
(name, value, unit, anchor, anchor value, goal, note). They run one after another (each
starts and stops its own services), and one table prints at the end with the anchor beside
each figure where one exists (MLflow, bare ``docker run``, the issue's earlier figure) and,
with ``--previous FILE``, the figure a former ``--save FILE`` recorded where a row has no
anchor of its own. A module that is missing (not merged yet), has no ``figures``, or fails
is named under the table; the others still print. ``--quick`` runs smaller sizes, for a
smoke run of the whole set. Not a test: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import Figure, table

# (name, module, what it needs): the order they run in. Optional ones arrive with other
# branches of issue 16 and are skipped, named, until then.
BENCHMARKS: tuple[tuple[str, str, str], ...] = (
    ("core", "bench.core", "Redis"),
    ("scale", "bench.scale", "Redis, Chromium (PostgreSQL with its own flag)"),
    ("tracking", "bench.tracking", "Redis; mlflow for its anchor"),
    ("admission", "bench.admission", "Redis"),
    ("bulk_submit", "bench.bulk_submit", "Redis"),
    ("bulk_cancel", "bench.bulk_cancel", "Redis (PostgreSQL server binaries)"),
    ("node_loss", "bench.node_loss", "Redis"),
    ("studio", "bench.studio", "Redis, Chromium"),
    ("docker", "bench.docker", "a Docker engine and the run image"),
    ("scheduling", "bench.scheduling", "nothing (a simulated clock)"),
    ("team_admission", "bench.team_admission", "nothing (SQLite in a temporary folder)"),
)
NAMES = [name for name, _, _ in BENCHMARKS]


def as_figure(row: Any) -> Figure:
    """A row as ``Figure``: one already, or any object or dict with its field names."""
    if isinstance(row, Figure):
        return row
    get: Callable[[str, Any], Any] = (
        (lambda key, default: row.get(key, default))
        if isinstance(row, dict)
        else (lambda key, default: getattr(row, key, default))
    )
    value = get("value", math.nan)
    anchor_value = get("anchor_value", None)
    return Figure(
        name=str(get("name", "?")),
        value=math.nan if value is None else float(value),
        unit=str(get("unit", "")),
        anchor=get("anchor", None),
        anchor_value=None if anchor_value is None else float(anchor_value),
        goal=get("goal", None),
        note=str(get("note", "") or ""),
    )


def collect(name: str, module_name: str, quick: bool) -> tuple[list[Figure], str]:
    """The module's rows, or none and why."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return [], "not present on this branch"
        return [], f"cannot import: {error}"
    produce = getattr(module, "figures", None)
    if produce is None:
        return [], "has no figures()"
    started = time.monotonic()
    try:
        rows = [as_figure(row) for row in produce(quick=quick)]
    except Exception as error:  # one failing benchmark must not hide the others' figures
        traceback.print_exc()
        return [], f"failed after {time.monotonic() - started:.0f} s: {error}".splitlines()[0]
    print(f"[bench] {name}: {len(rows)} figures in {time.monotonic() - started:.0f} s",
          file=sys.stderr, flush=True)  # fmt: skip
    return rows, ""


def with_previous(rows: list[Figure], previous: dict[str, float]) -> list[Figure]:
    """Rows without an anchor get the figure a former run recorded under the same name."""
    out = []
    for row in rows:
        if row.anchor is None and row.name in previous:
            row = Figure(row.name, row.value, row.unit, "previous", previous[row.name],
                         row.goal, row.note)  # fmt: skip
        out.append(row)
    return out


def pick(only: str | None, skip: str | None) -> list[tuple[str, str, str]]:
    chosen = set(only.split(",")) if only else set(NAMES)
    chosen -= set(skip.split(",")) if skip else set()
    unknown = chosen - set(NAMES)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(NAMES)}")  # fmt: skip
    return [b for b in BENCHMARKS if b[0] in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(NAMES)}")
    parser.add_argument("--skip", help="comma-separated benchmarks to leave out")
    parser.add_argument("--list", action="store_true", help="name the benchmarks and exit")
    parser.add_argument("--save", type=Path, help="write the figures as JSON here")
    parser.add_argument("--previous", type=Path, help="a --save file: anchor for bare rows")
    args = parser.parse_args(argv)
    if args.list:
        for name, module, needs in BENCHMARKS:
            print(f"{name:12} {module:20} needs {needs}")
        return 0
    chosen = pick(args.only, args.skip)
    previous: dict[str, float] = {}
    if args.previous:
        try:
            previous = {r["name"]: r["value"] for r in json.loads(args.previous.read_text())}
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"cannot read {args.previous}: {error}", file=sys.stderr)
            return 2
    rows: list[Figure] = []
    missing: list[str] = []
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    for name, module, _ in chosen:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        found, why = collect(name, module, args.quick)
        rows += found
        if why:
            missing.append(f"{name} ({module}): {why}")
    rows = with_previous(rows, previous)
    print(table(rows))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    sizes = "quick sizes" if args.quick else "full sizes"
    print(f"\nload average (1, 5, 15 min) before: {' '.join(load_before)}, "
          f"after: {' '.join(load_after)}; {sizes}")  # fmt: skip
    for line in missing:
        print(f"not measured: {line}")
    if args.save:
        saved = [{**vars(r)} for r in rows if not math.isnan(r.value)]
        args.save.write_text(json.dumps(saved, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
