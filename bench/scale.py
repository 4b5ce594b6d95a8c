"""Scale benchmark (issue 16): every list, /metrics, the Studio and the CLI on a big database.

    python -m bench.scale [--runs 1000000] [--database sqlite|postgresql] [--requests 20]

Fills a database through the store layer (``store.clusters``, ``store.runs`` and the bulk
loader ``store.seeding``): ``--runs`` runs across 20 clusters and 200 experiments, 10,000 of
them queued on one cluster (``scale-00``, which no worker serves), one running per cluster,
the rest ended (Completed, Failed, Canceled, with their timestamps), some children, some
tags. A SQLite fill is cached as ``/tmp/runyard-scale-<runs>-<schema>.sqlite`` (keyed by the
run count and a digest of the migrations), so a second run skips it; each measurement works
on a copy, so the cache stays as filled.

Then it starts the real API and scheduler (``tests.support.services.Stack``) on that database
with a real Redis, and one worker (serving ``scale-19``, which has nothing queued), and
prints p50/p95 of ``--requests`` requests to every list endpoint (and page 2 through
``cursor=`` where a response offers ``next_cursor``), one run, ``/metrics``; the Studio's
clusters page load to interactive in headless Chromium; ``runyard runs`` wall time; and the
resident memory of the API, scheduler and worker processes, at 1,000 runs and at
``--runs``. Not a test: it asserts nothing about speed. Everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.figures import Figure, quantile, table

CLUSTERS = 20
EXPERIMENTS = 200
QUEUED = 10_000
QUEUED_CLUSTER = "scale-00"
WORKER_CLUSTER = f"scale-{CLUSTERS - 1:02d}"  # nothing queued there: the worker idles
BATCH = 10_000
SEED_FORMAT = "1"  # bump when the fill below changes what it writes
SMALL = 1_000  # the "little history" database the memory figures compare with

LIST_GOAL, METRICS_GOAL, STUDIO_GOAL, RSS_GOAL = "<= 20", "<= 50", "<= 1000", "<= 500"
# The figures issue 16 measured on main with 200,000 runs (2,000 queued): p95, ms.
ISSUE_ANCHOR = "issue 16, 200k runs"
ISSUE_P95 = {
    "clusters/{c}/runs?status=queued": 421.0,
    "clusters/{c}/runs?status=active": 98.0,
    "experiments": 95.0,
    "experiments/{e}/runs": 192.0,
    "/metrics": 1691.0,
    "runs/{id}": 4.5,
}


# --- filling ------------------------------------------------------------------------------


def schema_key() -> str:
    """The migrations' head and a digest of their text: a cached fill is only reused on
    the schema it was made with (migrations 0012-0014 change content, not names)."""
    versions = Path(__file__).resolve().parent.parent / "store" / "migrations" / "versions"
    digest = hashlib.sha256(SEED_FORMAT.encode())
    for path in sorted(versions.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    head = sorted(p.name.split("_")[0] for p in versions.glob("[0-9]*.py"))[-1]
    return f"{head}-{digest.hexdigest()[:10]}"


def cache_path(runs: int, folder: Path | None = None) -> Path:
    folder = folder or Path(tempfile.gettempdir())
    return folder / f"runyard-scale-{runs}-{schema_key()}.sqlite"


@dataclass
class Fill:
    runs: int
    seconds: float  # 0 when taken from the cache
    size_bytes: int
    cached: bool


def fill(url: str, runs: int, queued: int, progress: bool = True) -> float:
    """Fill the (empty) database at ``url`` through the store layer; returns seconds."""
    from sqlmodel import Session

    from store import seeding
    from store.clusters import create_cluster
    from store.db import make_engine, migrate
    from store.models import ClusterCreate
    from store.runs import get_or_create_experiment

    started = time.perf_counter()
    engine = make_engine(url)
    migrate(engine)
    rng = random.Random(16)
    with Session(engine, expire_on_commit=False) as session:
        for c in range(CLUSTERS):
            create_cluster(session, ClusterCreate(name=f"scale-{c:02d}", nodes=8))
        experiments = [
            get_or_create_experiment(session, f"exp-{e:03d}").id for e in range(EXPERIMENTS)
        ]
        session.commit()
        rows: list[dict[str, Any]] = []
        tags: list[dict[str, Any]] = []
        ended = runs - queued - CLUSTERS  # the rest: queued on one cluster, one active each
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(days=365)
        step = (now - timedelta(hours=1) - start) / max(ended, 1)
        ids: list[str] = []
        roots: dict[int, int] = {}  # index of a child → index of its root
        for i in range(runs):
            e = i % EXPERIMENTS
            if i < ended:
                created = start + step * i
                status = rng.choices(("Completed", "Failed", "Canceled"), (80, 12, 8))[0]
                cluster = f"scale-{rng.randrange(1, CLUSTERS):02d}"
            elif i < ended + CLUSTERS:
                created = now - timedelta(minutes=30)
                status, cluster = "Running", f"scale-{i - ended:02d}"
            else:
                created = now - timedelta(seconds=(runs - i))
                status, cluster = "Queued", QUEUED_CLUSTER
            run_id = f"exp-{e:03d}_{int(created.timestamp())}_{i:08x}"
            ids.append(run_id)
            row = _run_row(run_id, experiments[e], cluster, status, created, rng)
            # About 5% are children of an earlier top-level run of their experiment, from a
            # batch already written (its row exists when the child's is inserted).
            if status != "Queued" and i >= BATCH + 2000 and rng.random() < 0.05:
                parent = i - BATCH - EXPERIMENTS * rng.randrange(1, 10)
                parent = roots.get(parent, parent)
                roots[i] = parent
                row["parent_run_id"] = row["root_run_id"] = ids[parent]
            rows.append(row)
            if rng.random() < 0.3:
                tags.append({"run_id": run_id, "key": "sweep", "value": f"sweep-{i // 5000}"})
                if rng.random() < 0.5:
                    quality = rng.choice(("good", "bad", None))
                    tags.append({"run_id": run_id, "key": "quality", "value": quality})
            if len(rows) == BATCH or i == runs - 1:
                seeding.seed_runs(session, rows, tags)
                session.commit()
                rows, tags = [], []
                if progress and (i + 1) % (BATCH * 10) == 0:
                    rate = (i + 1) / (time.perf_counter() - started)
                    print(f"  filled {i + 1:,} runs ({rate:,.0f} runs/s)", file=sys.stderr,
                          flush=True)  # fmt: skip
        ran = seeding.refresh_derived(session)
        session.commit()
        if ran and progress:
            print(f"  refreshed {', '.join(ran)}", file=sys.stderr, flush=True)
    if url.startswith("sqlite"):
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return time.perf_counter() - started


def _run_row(
    run_id: str, experiment_id: int, cluster: str, status: str, created: datetime, rng: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": run_id,
        "experiment_id": experiment_id,
        "cluster": cluster,
        "status": status,
        "priority": 10 if rng.random() < 0.05 else 0,
        "script": "train.py",
        "arguments": ["--lr", f"{rng.choice((0.1, 0.01, 0.001))}", "--epochs", "10"],
        "environment": {},
        "snapshot_digest": "0" * 64,
        "submitted_by": "bench",
        "created_at": created,
        "not_started_at": created,
        "queued_at": created,
    }
    if status == "Queued":
        return row
    node = f"scale-node-{cluster[-2:]}"
    dispatched = created + timedelta(seconds=rng.uniform(0.05, 600))
    running = dispatched + timedelta(seconds=rng.uniform(0.5, 5))
    row.update(
        worker_id=node,
        attempt=1,
        starting_at=running - timedelta(seconds=0.3),
        running_at=running,
    )
    if status == "Running":
        # Not marked dispatched: the watchdog (no worker heartbeats for these) leaves them be,
        # so the active lists keep their runs while measured.
        return row
    row["dispatched_at"] = dispatched
    ended = running + timedelta(seconds=rng.uniform(5, 6 * 3600))
    field_name = {"Completed": "completed_at", "Failed": "failed_at", "Canceled": "canceled_at"}
    row[field_name[status]] = ended
    row["exit_code"] = {"Completed": 0, "Failed": 1, "Canceled": None}[status]
    if status == "Failed":
        row["failure_reason"] = "exit code 1: RuntimeError: CUDA out of memory"
    elif status == "Canceled":
        row["cancel_requested_at"] = ended - timedelta(seconds=1)
        row["failure_reason"] = "canceled by bench"
    return row


def sqlite_database(
    runs: int, queued: int, fresh: bool = False, folder: Path | None = None
) -> tuple[Path, Fill]:
    """The cached filled SQLite file for ``runs`` (filled now if missing)."""
    path = cache_path(runs, folder)
    record = path.with_suffix(".fill.json")  # how long the fill took, kept beside it
    if path.exists() and not fresh:
        try:
            seconds = float(json.loads(record.read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            seconds = float("nan")
        return path, Fill(runs, seconds, path.stat().st_size, cached=True)
    partial = path.with_suffix(".filling")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    print(f"filling {runs:,} runs into {path} ...", file=sys.stderr, flush=True)
    seconds = fill(f"sqlite:///{partial}", runs, queued)
    partial.rename(path)  # only a finished fill is ever cached
    record.write_text(json.dumps({"seconds": seconds}))
    return path, Fill(runs, seconds, path.stat().st_size, cached=False)


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    p50: float = float("nan")
    p95: float = float("nan")
    bytes: int = 0
    error: str = ""
    goal: str | None = LIST_GOAL


@dataclass
class Measurement:
    runs: int
    timings: list[Timing] = field(default_factory=list)
    studio_ms: list[float] = field(default_factory=list)
    studio_error: str = ""
    cli: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)


def time_get(
    http: httpx.Client, name: str, path: str, requests: int, goal: str | None = LIST_GOAL
) -> tuple[Timing, Any]:
    """``requests`` sequential GETs of ``path`` (after one to warm up): p50/p95 in ms."""
    timing = Timing(name, goal=goal)
    print(f"  GET {name} ...", file=sys.stderr, flush=True)
    try:
        first = http.get(path)
        if first.status_code != 200:
            timing.error = f"HTTP {first.status_code}: {first.text[:120]}"
            return timing, None
        seconds = []
        for _ in range(requests):
            started = time.perf_counter()
            response = http.get(path)
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
        timing.p50 = quantile(seconds, 0.50) * 1000
        timing.p95 = quantile(seconds, 0.95) * 1000
        timing.bytes = len(first.content)
        is_json = first.headers.get("content-type", "").startswith("application/json")
        return timing, first.json() if is_json else None
    except httpx.HTTPError as error:
        timing.error = f"{type(error).__name__}: {error}"
        return timing, None


def list_paths(http: httpx.Client, root: str) -> list[tuple[str, str]]:
    """Every list request measured: (figure name, path under /api/v1 or absolute URL)."""
    from runyard import api_paths as paths

    def q(params: dict[str, str]) -> str:
        return f"?{httpx.QueryParams(params)}"

    runs = paths.RUNS
    one = http.get(runs, params={"limit": 1, "status": "Completed"}).json()["data"]
    # A parent among the latest ended runs (the newest runs are queued: no children there).
    ended = http.get(runs, params={"limit": 500, "status": "Completed"}).json()["data"]
    found = [r for r in ended if r["parent_run_id"]]
    parent = found[0]["parent_run_id"] if found else (one[0]["id"] if one else "none")
    queue, c, e = QUEUED_CLUSTER, "scale-03", "exp-007"
    listed = [
        ("runs (default page)", runs),
        ("runs?cluster=", runs + q({"cluster": c})),
        ("runs?experiment=", runs + q({"experiment": e})),
        ("runs?status=Failed", runs + q({"status": "Failed"})),
        ("runs?cluster=&status=Queued", runs + q({"cluster": queue, "status": "Queued"})),
        ("runs?tags=", runs + q({"tags": json.dumps({"sweep": "sweep-0"})})),
        ("runs?top_level=true", runs + q({"top_level": "true"})),
        ("runs?parent=", runs + q({"parent": parent})),
        ("clusters", paths.CLUSTERS),
        ("clusters/{c}/runs?status=queued", paths.cluster_runs(queue) + q({"status": "queued"})),
        ("clusters/{c}/runs?status=active", paths.cluster_runs(c) + q({"status": "active"})),
        ("clusters/{c}/runs?status=all", paths.cluster_runs(queue) + q({"status": "all"})),
        ("clusters/{c}/history", f"{paths.cluster(c)}/history"),
        ("experiments", paths.EXPERIMENTS),
        ("experiments/{e}/runs", f"{paths.EXPERIMENTS}/{e}/runs"),
        ("workers", paths.WORKERS),
        ("audit", paths.AUDIT),
        ("tokens", paths.TOKENS),
        ("environments", paths.ENVIRONMENTS),
    ]
    known = {f"/api/v1{p.split('?')[0]}" for _, p in listed}
    # List endpoints this harness does not name yet (a new one after a merge): every GET
    # under /api/v1 without path parameters is timed too.
    schema = http.get(f"{root}/openapi.json").json()
    skip = (paths.WHOAMI, paths.LATEST_ENVIRONMENT_BUILD)
    for path, operations in sorted(schema.get("paths", {}).items()):
        plain = "get" in operations and "{" not in path and path.startswith("/api/v1/")
        if plain and path not in known and not path.endswith(skip):
            listed.append((path.removeprefix("/api/v1/"), f"{root}{path}"))
    return listed


def measure_api(http: httpx.Client, root: str, requests: int) -> list[Timing]:
    from runyard import api_paths as paths

    timings = []
    for name, path in list_paths(http, root):
        timing, body = time_get(http, name, path, requests)
        timings.append(timing)
        cursor = body.get("next_cursor") if isinstance(body, dict) else None
        if cursor:
            joiner = "&" if "?" in path else "?"
            page2 = f"{path}{joiner}{httpx.QueryParams({'cursor': cursor})}"
            timings.append(time_get(http, f"{name} page 2 (cursor)", page2, requests)[0])
    completed = http.get(paths.RUNS, params={"status": "Completed", "limit": 1}).json()
    run_id = completed["data"][0]["id"]
    timings.append(time_get(http, "runs/{id}", paths.run(run_id), requests, None)[0])
    timings.append(time_get(http, "/metrics", f"{root}/metrics", requests, METRICS_GOAL)[0])
    return timings


def studio_clusters(url: str, token: str, loads: int) -> list[float]:
    """Milliseconds from navigation to the clusters page showing every cluster card (its
    first data rendered, one animation frame later), ``loads`` times, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    from tests.support.browser import launch, sign_in

    # Every cluster's card drawn (they render together, once every list has answered). A
    # failed fetch shows an error and the page tries again on its next poll: keep waiting.
    ready = """() => {
        const main = document.querySelector('main');
        if (!main) return false;
        if (main.querySelector('section.cluster')) return true;
        return main.children.length > 1 && !main.querySelector('.error')
            && !main.innerText.includes('Loading');
    }"""
    frame = "() => new Promise(done => requestAnimationFrame(() => done(performance.now())))"
    results = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            sign_in(page, url, token)
            for _ in range(loads):
                page.goto("about:blank")
                page.goto(f"{url}/clusters", wait_until="commit")
                page.wait_for_function(ready, timeout=300_000, polling="raf")
                results.append(float(page.evaluate(frame)))
        finally:
            browser.close()
    return results


def cli_wall(env: dict[str, str], args: list[str], times: int) -> list[float]:
    from tests.support.services import runyard

    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        done = subprocess.run(runyard(*args), env=env, capture_output=True, check=False)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace").strip()[-300:])
    return seconds


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it, in MB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending += [int(c) for c in children]
    return total / 1e6


@contextmanager
def stack_on(database_url: str, root: Path) -> Iterator[Any]:
    """The API, one scheduler and one idle worker on ``database_url``, with a real Redis."""
    from tests.support.services import Stack, redis_server

    with redis_server(root / "redis") as redis:
        stack = Stack(root=root / "stack", redis=redis, database_url=database_url)
        try:
            stack.start()
            stack.start_worker(WORKER_CLUSTER, slots=1, name="scale-bench-worker")
            yield stack
        finally:
            stack.stop()


def measure(database_url: str, runs: int, root: Path, options: argparse.Namespace) -> Measurement:
    from tests.support.services import ADMIN

    result = Measurement(runs)
    with stack_on(database_url, root) as stack:
        api, scheduler = stack.processes[0], stack.processes[1]
        worker = stack.workers[0]
        api_root = f"{stack.url}/api/v1"
        with httpx.Client(base_url=api_root, headers=ADMIN, timeout=600) as http:
            result.timings = measure_api(http, stack.url, options.requests)
        if options.studio_loads:
            from tests.support.services import ADMIN_TOKEN

            try:
                result.studio_ms = studio_clusters(stack.url, ADMIN_TOKEN, options.studio_loads)
            except Exception as error:  # a missing browser is reported, not fatal
                result.studio_error = f"{type(error).__name__}: {str(error)[:160]}"
        for label, args in (
            ("runyard runs", ["runs"]),
            ("runyard runs --cluster --status queued",
             ["runs", "--cluster", QUEUED_CLUSTER, "--status", "queued"]),
        ):  # fmt: skip
            try:
                result.cli[label] = cli_wall(stack.env, args, options.cli_times)
            except RuntimeError as error:
                result.cli[label] = []
                print(f"  {label}: {error}", file=sys.stderr)
        result.rss_mb = {
            "API": rss_mb(api.pid),
            "scheduler": rss_mb(scheduler.pid),
            "worker": rss_mb(worker.pid),
        }
    return result


# --- reporting ----------------------------------------------------------------------------


def rows(big: Measurement, small: Measurement | None, load: str) -> list[Figure]:
    size = f"{big.runs:,} runs"
    out = []
    for t in big.timings:
        anchor = ISSUE_P95.get(t.name)
        note = t.error or f"p50 {t.p50:.1f} ms, {t.bytes:,} B"
        out.append(
            Figure(
                f"GET {t.name} p95 ({size})",
                t.p95,
                "ms",
                ISSUE_ANCHOR if anchor else None,
                anchor,
                t.goal,
                note,
            )
        )
    studio = quantile(big.studio_ms, 0.5) if big.studio_ms else float("nan")
    note = big.studio_error or (
        f"p50 of {len(big.studio_ms)} loads, max {max(big.studio_ms):.0f} ms"
        if big.studio_ms
        else "not measured"
    )
    out.append(Figure(f"Studio clusters page interactive ({size})", studio, "ms", goal=STUDIO_GOAL,
                      note=note))  # fmt: skip
    for label, seconds in big.cli.items():
        value = quantile(seconds, 0.5) * 1000 if seconds else float("nan")
        out.append(Figure(f"{label} wall ({size})", value, "ms",
                          note=f"p50 of {len(seconds)}, includes interpreter start"))  # fmt: skip
    for process, mb in big.rss_mb.items():
        before = small.rss_mb.get(process) if small else None
        out.append(Figure(f"{process} RSS ({size})", mb, "MB",
                          f"at {small.runs:,} runs" if small else None, before, RSS_GOAL,
                          "after the requests above"))  # fmt: skip
    one_minute = float(load.split()[0]) if load else float("nan")
    out.append(Figure("load average during the measurement (1 min)", one_minute, "",
                      note=f"1/5/15 min: {load}; 2 cores, shared"))  # fmt: skip
    return out


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- running ------------------------------------------------------------------------------


@contextmanager
def database(
    kind: str, runs: int, queued: int, root: Path, fresh: bool, cache: Path | None = None
) -> Iterator[tuple[str, Fill]]:
    """A filled database of ``runs`` runs: a working copy of the cached SQLite file, or a
    throwaway PostgreSQL filled now."""
    if kind == "sqlite":
        cached, info = sqlite_database(runs, queued, fresh, cache)
        copy = root / f"runyard-{runs}.sqlite"
        shutil.copyfile(cached, copy)
        yield f"sqlite:///{copy}", info
        return
    from tests.support.services import postgres_server

    # Not under ``root`` (0700, root's): the server runs as the postgres user (as in conftest).
    folder = Path(tempfile.mkdtemp(prefix=f"runyard-bench-pg-{runs}-"))
    folder.chmod(0o755)
    try:
        with postgres_server(folder / "server") as url:
            print(f"filling {runs:,} runs into PostgreSQL ...", file=sys.stderr, flush=True)
            seconds = fill(url, runs, queued)
            from sqlalchemy import create_engine, text

            engine = create_engine(url)
            with engine.connect() as connection:
                query = text("SELECT pg_database_size('postgres')")
                size = connection.execute(query).scalar_one()
            engine.dispose()
            yield url, Fill(runs, seconds, int(size), cached=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(options: argparse.Namespace, say: Callable[[str], None] = print) -> list[Figure]:
    """Fill (or reuse) both databases, measure on each, and return the rows."""
    queued = min(QUEUED, max(options.runs // 10, 1))
    small_queued = min(QUEUED, SMALL // 10)
    with tempfile.TemporaryDirectory(prefix="runyard-bench-scale-") as folder:
        root = Path(folder)
        small = None
        if options.runs != SMALL and not options.skip_small:
            with database(
                options.database, SMALL, small_queued, root, options.fresh, options.cache_dir
            ) as (url, _):
                say(f"measuring at {SMALL:,} runs ({options.database}) ...")
                small = measure(url, SMALL, root / "small", _lighter(options))
        with database(
            options.database, options.runs, queued, root, options.fresh, options.cache_dir
        ) as (url, info):
            how = "cached" if info.cached else f"filled in {info.seconds:.1f} s"
            say(f"database: {options.runs:,} runs ({queued:,} queued), {options.database}, "
                f"{info.size_bytes / 1e6:,.0f} MB, {how}")  # fmt: skip
            say(f"measuring at {options.runs:,} runs; load before: {load_average()}")
            big = measure(url, options.runs, root / "big", options)
            load = load_average()
            say(f"load after: {load}")
    figures = rows(big, small, load)
    how = "when it was cached" if info.cached else "now"
    figures.append(Figure(f"fill {options.runs:,} runs ({options.database})", info.seconds, "s",
                          note=f"{options.runs / info.seconds:,.0f} runs/s, {how}"))  # fmt: skip
    figures.append(Figure(f"database size ({options.runs:,} runs, {options.database})",
                          info.size_bytes / 1e6, "MB"))  # fmt: skip
    return figures


def _lighter(options: argparse.Namespace) -> argparse.Namespace:
    """The small database needs only its memory figures and a warm-up."""
    return argparse.Namespace(**{**vars(options), "studio_loads": 1, "cli_times": 1,
                                 "requests": min(options.requests, 5)})  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1_000_000, help="runs in the big database")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--requests", type=int, default=20, help="timed requests per endpoint")
    p.add_argument("--studio-loads", type=int, default=5, help="0 skips the browser")
    p.add_argument("--cli-times", type=int, default=5)
    p.add_argument("--fresh", action="store_true", help="fill again even if cached")
    p.add_argument("--cache-dir", type=Path, help="where filled SQLite files are kept (/tmp)")
    p.add_argument("--skip-small", action="store_true", help="no 1,000-run memory anchor")
    return p


def figures(quick: bool = False) -> list[Figure]:
    """Rows for ``python -m bench``; quick: 20,000 runs and fewer requests."""
    args = ["--runs", "20000", "--requests", "5", "--studio-loads", "1", "--cli-times", "1"]
    return run(parser().parse_args(args if quick else []), say=_progress)


def _progress(message: str) -> None:
    """Under ``python -m bench`` progress goes to stderr: stdout holds the one table."""
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    options = parser().parse_args()
    if options.runs < CLUSTERS * 2 + 10:
        print(f"--runs must be at least {CLUSTERS * 2 + 10}", file=sys.stderr)
        return 2
    print(table(run(options)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
