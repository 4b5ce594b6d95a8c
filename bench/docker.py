"""Docker executor benchmark (issue 3): submit -> Running through Runyard, side by side with
a bare ``docker run`` of the same image and the same hardening flags.

    python -m bench.docker [--runs 30] [--image runyard-run-base:bookworm]

Starts a private Redis, the API, the scheduler and a worker as real processes (a Docker
engine must be running, and the image present; `make test` builds it). Prints p50/p95 of
both and Runyard's overhead; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from bench.figures import Figure, quantile
from runyard.core import Experiment, ScriptRunConfig, Workspace
from tests.support.services import RUN_IMAGE, Stack, redis_server, stop_process

# What a bare `docker run` needs to match the container a Runyard run gets.
HARDENED = [
    "--user",
    "1000:1000",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,size=1024m",
    "--memory",
    "256m",
    "--memory-swap",
    "256m",
    "--cpus",
    "2",
    "--pids-limit",
    "1024",
    "--init",
    "--shm-size",
    "256m",
]
# Both sides are timed to the moment the script itself runs: it prints the clock first thing.
SCRIPT = "import time\nprint('started', time.time(), flush=True)\n"


def started_at(output: str) -> float:
    line = next(x for x in output.splitlines() if x.startswith("started "))
    return float(line.split()[1])


def bare_docker(image: str, folder: Path, runs: int) -> list[float]:
    """Seconds from `docker run` to the script running in the container."""
    latencies = []
    for _ in range(runs):
        started = time.time()
        process = subprocess.Popen(
            [
                "docker",
                "run",
                "--rm",
                *HARDENED,
                "-v",
                f"{folder}:/workspace",
                "-w",
                "/workspace",
                image,
                "python3",
                "-u",
                "noop.py",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        output, _ = process.communicate()
        latencies.append(started_at(output) - started)
    return latencies


def runyard_docker(stack: Stack, image: str, folder: Path, runs: int) -> list[float]:
    """Seconds from Experiment.submit() to the script running in its container."""
    client = stack.client()
    client.create_cluster(
        "bench-docker", nodes=1, executor="docker", container={"image": image, "memory_mib": 256}
    )
    worker = stack.start_worker("bench-docker", slots=1, name="bench-docker")
    experiment = Experiment(Workspace(url=stack.url), "bench-docker")
    config = ScriptRunConfig(
        source_directory=folder, script="noop.py", compute_target="bench-docker"
    )
    experiment.submit(config).wait_for_completion()  # warm: snapshot cache, image in memory
    latencies = []
    for _ in range(runs):
        started = time.time()
        run = experiment.submit(config)
        run.wait_for_completion()
        latencies.append(started_at(client.logs(run.id)) - started)
    stop_process(worker)
    return latencies


def measure(runs: int, image: str) -> tuple[list[float], list[float]]:
    """(bare ``docker run`` latencies, Runyard's), seconds each."""
    with tempfile.TemporaryDirectory(prefix="runyard-bench-docker-") as tmp:
        root = Path(tmp)
        folder = root / "src"
        folder.mkdir()
        (folder / "noop.py").write_text(SCRIPT)
        folder.chmod(0o755)
        bare = bare_docker(image, folder, runs)
        with redis_server(root / "redis") as redis:
            stack = Stack(root=root / "stack", redis=redis)
            stack.start()
            try:
                ours = runyard_docker(stack, image, folder, runs)
            finally:
                stack.stop()
    return bare, ours


def figures(quick: bool = False) -> list[Figure]:
    """Rows for ``python -m bench``: Runyard's p50/p95 beside bare ``docker run``'s."""
    runs = 5 if quick else 30
    bare, ours = measure(runs, RUN_IMAGE)
    return [
        Figure(
            f"submit -> Running, Docker executor {name}",
            quantile(ours, q) * 1000,
            "ms",
            "bare docker run",
            quantile(bare, q) * 1000,
            note=f"{runs} runs each, image {RUN_IMAGE}",
        )
        for q, name in ((0.5, "p50"), (0.95, "p95"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--image", default=RUN_IMAGE)
    args = parser.parse_args()
    bare, ours = measure(args.runs, args.image)
    print(f"submit -> Running, Docker executor, {args.runs} runs each, image {args.image}:")
    for label, values in (("bare docker run", bare), ("runyard", ours)):
        print(
            f"  {label:16} p50 {quantile(values, 0.5) * 1000:7.1f} ms   "
            f"p95 {quantile(values, 0.95) * 1000:7.1f} ms"
        )
    for q, name in ((0.5, "p50"), (0.95, "p95")):
        added = quantile(ours, q) - quantile(bare, q)
        print(
            f"  {name}: runyard adds {added * 1000:+.1f} ms "
            f"(ratio {quantile(ours, q) / quantile(bare, q):.2f}x)"
        )


if __name__ == "__main__":
    main()
