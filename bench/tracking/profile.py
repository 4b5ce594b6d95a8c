"""Where an ingested point's time goes, per process: py-spy on the API and the scheduler,
cProfile on the SDK (this process), while one interactive run logs N points, completes
and reads them back.

    python -m bench.tracking.profile [--points 200000] [--top 25] [--keep DIR]

Needs py-spy (``pip install py-spy``; it reads the other processes' stacks, so it may
need root or ptrace rights). Prints, per process, the CPU time it was seen busy (µs per
point) and the functions that took it, inclusive and self. Not a test; the figures move
with the machine's load, printed beside them.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.tracking.ingest import runyard_run
from tests.support.services import Stack, redis_server

RATE = 200  # py-spy samples per second
# Where a thread waits. (uvicorn's loop is uvloop: its waiting and its own C work both show
# as Runner.run, counted as waiting here.)
IDLE = {
    "select (selectors.py",
    "wait (threading.py",
    "Condition.wait (threading.py",
    "_worker (thread.py",
    "Runner.run (runners.py",
}


def summarise(raw: Path, points: int, top: int) -> list[str]:
    """py-spy's raw (collapsed) stacks: busy time per point, the heaviest functions."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        names = [_name(f) for f in stack.split(";")]
        if names[-1] in IDLE:
            continue  # a thread waiting, not working
        n = int(count)
        busy += n
        for name in set(names):
            inclusive[name] += n
        own[names[-1]] += n
    per_point = busy / RATE / points * 1e6
    lines = [f"  busy {busy / RATE:.2f} s = {per_point:.1f} µs per point"]
    for label, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"  -- {label}")
        for name, n in counter.most_common(top):
            lines.append(
                f"  {n / max(busy, 1) * 100:5.1f}%  {n / RATE / points * 1e6:6.2f} µs  {name}"
            )
    return lines


def _name(frame: str) -> str:
    function, _, where = frame.partition(" (")
    return f"{function} ({where.split(':')[0].split('/')[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking.profile", description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", help="a folder to keep the raw profiles in")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        parser.error("py-spy is not installed (pip install py-spy)")
    with tempfile.TemporaryDirectory(prefix="runyard-profile-") as tmp:
        root = Path(tmp)
        out = Path(args.keep) if args.keep else root / "profiles"
        out.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()[0]
        with redis_server(root / "redis") as redis:
            stack = Stack(root=root / "stack", redis=redis)
            try:
                stack.start()
                runyard_run(stack.url, 2000, str(root / "warm"))  # imports, first requests
                api, scheduler = stack.processes[0].pid, stack.processes[1].pid
                spies = [
                    subprocess.Popen(
                        [
                            spy,
                            "record",
                            "-r",
                            str(RATE),
                            "-p",
                            str(pid),
                            "-f",
                            "raw",
                            "-o",
                            str(out / f"{name}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for name, pid in (("api", api), ("scheduler", scheduler))
                ]
                profile = cProfile.Profile()
                profile.enable()
                result = runyard_run(stack.url, args.points, str(root / "run"))
                profile.disable()
                for process in spies:
                    process.send_signal(signal.SIGINT)
                for process in spies:
                    process.wait(60)
            finally:
                stack.stop()
        end_load = os.getloadavg()[0]
        print(
            f"{args.points:,} points, {result['rate']:,.0f} points/s end to end (under the "
            f"profilers); load average {load:.2f} at the start, {end_load:.2f} at the end"
        )
        for name in ("api", "scheduler"):
            print(f"{name} (py-spy, {RATE} Hz):")
            print("\n".join(summarise(out / f"{name}.txt", args.points, args.top)))
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("tottime").print_stats(args.top)
        print("sdk, the logging thread (cProfile; the sender thread is not profiled):")
        print(text.getvalue())


if __name__ == "__main__":
    main()
