"""Lists and /metrics at a large history: p50/p95 of each list endpoint, /metrics and one
run, against a real API process on SQLite.

Fills a database directly (multi-row INSERTs, as a bulk writer would: the counters of
migration 0012 are kept by the database either way) with ``--runs`` runs of experiment
``scale`` on cluster ``scale``: ``--queued`` of them queued, one running, the rest ended.
Run it from a checkout to measure that checkout's code (``PYTHONPATH`` = the checkout):

    python -m bench.lists_probe --runs 100000
    cd ../main && PYTHONPATH=. python ../wt-lists/bench/lists_probe.py --runs 100000
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy
from sqlmodel import Session

from store.db import make_engine, migrate
from store.models import Cluster, Experiment, Run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(url: str, runs: int, queued: int) -> list[str]:
    engine = make_engine(url)
    migrate(engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with Session(engine) as session:
        session.add(Cluster(name="scale", nodes=4))
        session.add(Experiment(id=1, name="scale", created_at=start))
        session.commit()
    with engine.begin() as conn:
        batch: list[dict] = []
        ids = []
        for i in range(runs):
            created = start + timedelta(seconds=i)
            row = {
                "id": f"scale_{i:07d}",
                "experiment_id": 1,
                "cluster": "scale",
                "script": "train.py",
                "arguments": [],
                "environment": {},
                "created_at": created,
                "queued_at": created,
                "priority": 0,
                "attempt": 1,
                "build_only": False,
                "preparing_at": None,
                "running_at": None,
                "completed_at": None,
                "exit_code": None,
            }
            if i >= runs - queued:
                row["status"] = "Queued"
            elif i == runs - queued - 1:
                row.update(status="Running", preparing_at=created, running_at=created)
            else:
                ended = created + timedelta(seconds=30 + i % 600)
                row.update(
                    status="Completed",
                    preparing_at=created + timedelta(seconds=i % 7),
                    running_at=created + timedelta(seconds=i % 7),
                    completed_at=ended,
                    exit_code=0,
                )
            batch.append(row)
            ids.append(row["id"])
            if len(batch) == 500:
                conn.execute(sqlalchemy.insert(Run).values(batch))
                batch = []
        if batch:
            conn.execute(sqlalchemy.insert(Run).values(batch))
    engine.dispose()
    return ids


def measure(base: str, token: str, path: str, requests: int) -> tuple[float, float, int]:
    headers = {"Authorization": f"Bearer {token}"}
    times, size = [], 0
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        client.get(path)  # warm
        for _ in range(requests):
            began = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - began) * 1000)
            response.raise_for_status()
            size = len(response.content)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    import store

    print(f"code: {Path(store.__file__).parent.parent}")
    root = Path(tempfile.mkdtemp(prefix="lists-probe-"))
    url = f"sqlite:///{root}/runyard.db"
    began = time.perf_counter()
    ids = fill(url, args.runs, args.queued)
    print(f"filled {args.runs} runs in {time.perf_counter() - began:.1f} s", flush=True)
    redis_port, api_port, token = free_port(), free_port(), "ryt_probe-" + secrets.token_hex(8)
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(
        RUNYARD_DATABASE_URL=url,
        RUNYARD_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        RUNYARD_DATA_DIR=str(root / "data"),
        RUNYARD_BOOTSTRAP_ADMIN_TOKEN=token,
        PYTHONPATH=os.getcwd(),
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "runyard", "api", "--port", str(api_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        paths = [
            "/api/v1/clusters/scale/runs?status=queued",
            "/api/v1/clusters/scale/runs?status=active",
            "/api/v1/clusters/scale/history",
            "/api/v1/clusters",
            "/api/v1/experiments",
            "/api/v1/experiments/scale/runs",
            "/api/v1/runs",
            "/api/v1/runs?status=Queued",
            "/metrics",
            f"/api/v1/runs/{ids[-1]}",
        ]
        print(f"{'request':48} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>9}")
        for path in paths:
            p50, p95, size = measure(base, token, path, args.requests)
            print(f"{path:48} {p50:8.1f} {p95:8.1f} {size:9d}", flush=True)
    finally:
        api.terminate()
        api.wait(20)
        redis.terminate()
        redis.wait(20)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
