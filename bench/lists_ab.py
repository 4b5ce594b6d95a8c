"""Before/after figures for every list endpoint, in the same conditions: two API processes,
one running another checkout's code (``--before``, e.g. main) and one this checkout's, each
on its own copy of the same filled SQLite file, sharing one Redis; every endpoint is asked
of both in turns (A, B, B, A, ...), so load from other work on the machine falls on both
alike. Prints p50/p95 of each and the ratio, with the load average beside.

    python -m bench.scale --runs 200000 --requests 1 --studio-loads 0 --cli-times 0 \\
        --skip-small          # fills (and caches) /tmp/runyard-scale-200000-<schema>.sqlite
    python -m bench.lists_ab --database /tmp/runyard-scale-200000-<schema>.sqlite \\
        --before /work/main

Indexes named in ``--drop-before`` (default: those migration 0016 adds) are dropped from the
before copy, so the older code runs on the schema it shipped with. Not a test: it asserts
nothing about speed. Everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.figures import quantile

HERE = Path(__file__).resolve().parent.parent
QUEUE, CLUSTER, EXPERIMENT = "scale-00", "scale-03", "exp-007"  # as bench.scale fills
NEW_INDEXES = ("ix_runtag_key_value", "ix_runproperty_key_value")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def paths() -> list[tuple[str, str, dict[str, str]]]:
    """(name, path, params) of every list request, as bench.scale names them."""
    runs, clusters = "/api/v1/runs", "/api/v1/clusters"
    return [
        ("runs (default page)", runs, {}),
        ("runs?cluster=", runs, {"cluster": CLUSTER}),
        ("runs?experiment=", runs, {"experiment": EXPERIMENT}),
        ("runs?status=Failed", runs, {"status": "Failed"}),
        ("runs?cluster=&status=Queued", runs, {"cluster": QUEUE, "status": "Queued"}),
        ("runs?tags= (a sweep)", runs, {"tags": json.dumps({"sweep": "sweep-0"})}),
        ("runs?tags= (a common key)", runs, {"tags": json.dumps({"quality": None})}),
        ("runs?top_level=true", runs, {"top_level": "true"}),
        ("clusters", "/api/v1/clusters", {}),
        ("clusters/{c}/runs?status=queued", f"{clusters}/{QUEUE}/runs", {"status": "queued"}),
        ("clusters/{c}/runs?status=active", f"{clusters}/{CLUSTER}/runs", {"status": "active"}),
        ("clusters/{c}/runs?status=all", f"{clusters}/{QUEUE}/runs", {"status": "all"}),
        ("clusters/{c}/history", f"{clusters}/{CLUSTER}/history", {}),
        ("experiments", "/api/v1/experiments", {}),
        ("experiments/{e}/runs", f"/api/v1/experiments/{EXPERIMENT}/runs", {}),
        ("workers", "/api/v1/workers", {}),
        ("audit", "/api/v1/audit", {}),
        ("tokens", "/api/v1/tokens", {}),
        ("environments", "/api/v1/environments", {}),
    ]  # fmt: skip


@contextmanager
def api(checkout: Path, database: Path, redis_url: str, token: str, root: Path) -> Iterator[str]:
    """The API of ``checkout`` (its own .venv) on ``database``; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(
        RUNYARD_DATABASE_URL=f"sqlite:///{database}",
        RUNYARD_REDIS_URL=redis_url,
        RUNYARD_DATA_DIR=str(root / "data"),
        RUNYARD_BOOTSTRAP_ADMIN_TOKEN=token,
        PYTHONPATH=str(checkout),
    )
    python = checkout / ".venv" / "bin" / "python"
    log = open(root / "api.log", "ab")  # noqa: SIM115 (kept open for the child)
    process = subprocess.Popen(
        [str(python), "-m", "runyard", "api", "--port", str(port)],
        env=env,
        cwd=checkout,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the API of {checkout} exited; see {root / 'api.log'}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", type=Path, required=True, help="a filled SQLite file")
    parser.add_argument("--before", type=Path, default=Path("/work/main"), help="a checkout")
    parser.add_argument("--after", type=Path, default=HERE, help="a checkout (this one)")
    parser.add_argument("--requests", type=int, default=20, help="per endpoint and side")
    parser.add_argument("--drop-before", nargs="*", default=list(NEW_INDEXES))
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lists-ab-"))
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    token = "ryt_listsab-0123456789abcdef"
    try:
        copies = {}
        for side in ("before", "after"):
            (root / side).mkdir()
            copies[side] = root / side / "runyard.sqlite"
            shutil.copyfile(options.database, copies[side])
        with sqlite3.connect(copies["before"]) as conn:
            for name in options.drop_before:
                conn.execute(f"DROP INDEX IF EXISTS {name}")
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        headers = {"Authorization": f"Bearer {token}"}
        start_load = load()
        with (
            api(options.before, copies["before"], redis_url, token, root / "before") as a,
            api(options.after, copies["after"], redis_url, token, root / "after") as b,
            httpx.Client(headers=headers, timeout=60) as http,
        ):
            print(f"before: {options.before}  after: {options.after}")
            print(f"database: {options.database} ({options.database.stat().st_size >> 20} MB)")
            print(f"load average at start (1 min): {start_load}; 2 cores, shared")
            print(
                f"{'request':34} {'before p50':>10} {'p95':>7} {'after p50':>10} {'p95':>7} "
                f"{'p95 ratio':>9} {'load':>5}"
            )
            for name, path, params in paths():
                for pages in (1, 2):
                    times: dict[str, list[float]] = {"before": [], "after": []}
                    urls = {}
                    for side, base in (("before", a), ("after", b)):
                        first = http.get(f"{base}{path}", params=params)  # warm
                        first.raise_for_status()
                        urls[side] = (f"{base}{path}", params)
                        if pages == 2:
                            cursor = first.json().get("next_cursor")
                            if not cursor:
                                break
                            urls[side] = (f"{base}{path}", {**params, "cursor": cursor})
                    if len(urls) < 2:
                        continue
                    for i in range(options.requests):
                        order = ("before", "after") if i % 2 == 0 else ("after", "before")
                        for side in order:
                            url, query = urls[side]
                            began = time.perf_counter()
                            http.get(url, params=query).raise_for_status()
                            times[side].append((time.perf_counter() - began) * 1000)
                    p50a, p95a = quantile(times["before"], 0.5), quantile(times["before"], 0.95)
                    p50b, p95b = quantile(times["after"], 0.5), quantile(times["after"], 0.95)
                    label = name if pages == 1 else f"{name} page 2"
                    print(
                        f"{label:34} {p50a:10.1f} {p95a:7.1f} {p50b:10.1f} {p95b:7.1f} "
                        f"{p95a / p95b:8.1f}x {load():>5}",
                        flush=True,
                    )
        print(f"load average at end (1 min): {load()}")
    finally:
        redis.terminate()
        redis.wait(20)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
