"""The scale benchmark's harness works end to end on a tiny database: every figure it
promises (each list endpoint, one run, /metrics, the Studio page, the CLI, each process's
memory) is printed with a number. Its speed is not judged here: figures go in bench/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXPECTED = [
    "GET runs (default page) p95",
    "GET runs?cluster= p95",
    "GET runs?experiment= p95",
    "GET runs?status=Failed p95",
    "GET runs?tags= p95",
    "GET runs?parent= p95",
    "GET clusters p95",
    "GET clusters/{c}/runs?status=queued p95",
    "GET clusters/{c}/runs?status=active p95",
    "GET clusters/{c}/runs?status=all p95",
    "GET clusters/{c}/history p95",
    "GET experiments p95",
    "GET experiments/{e}/runs p95",
    "GET workers p95",
    "GET audit p95",
    "GET tokens p95",
    "GET environments p95",
    "GET runs/{id} p95",
    "GET /metrics p95",
    "Studio clusters page interactive",
    "runyard runs wall",
    "runyard runs --cluster --status queued wall",
    "API RSS",
    "scheduler RSS",
    "worker RSS",
    "fill 2,000 runs",
    "database size",
]


def table_rows(output: str) -> dict[str, str]:
    """Figure name → its printed value, cut by the columns the dashes line marks."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    widths = [len(cell) for cell in lines[rule].split("  ")]
    rows = {}
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        name = line[: widths[0]].strip()
        start = widths[0] + 2
        rows[name] = line[start : start + widths[1]].strip()
    return rows


def test_the_scale_benchmark_prints_every_figure_with_a_number(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.scale", "--runs", "2000", "--skip-small",
               "--requests", "1", "--studio-loads", "1", "--cli-times", "1",
               "--cache-dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    for expected in EXPECTED:
        matching = [name for name in rows if name.startswith(expected)]
        assert matching, f"no figure {expected!r} in:\n{done.stdout}"
    for name, value in rows.items():
        assert value and value != "n/a", f"{name}: no number\n{done.stdout}"
        float(value.replace(",", ""))
    # The fill is cached under its size and schema, and a finished fill only.
    assert [p.name for p in tmp_path.glob("runyard-scale-2000-*.sqlite")]
    assert not list(tmp_path.glob("*.filling"))
