"""Environment builds benchmark (issue 15), side by side in one run on this machine, with
the same realistic requirements (numpy + pandas + scikit-learn) from this host's own
package index (its pip configuration, which Runyard's builder reads too):

- cold build: Runyard's builder (a local venv; a Docker image), each with empty caches,
  vs ``python -m venv`` + ``pip install -r`` into a fresh venv (fresh pip cache; once as
  pip resolves, once given the very packages uv chose) vs ``uv venv`` + ``uv pip install
  -r`` alone (fresh ``UV_CACHE_DIR``);
- cache hit: submit -> Running (the script's first line) of a run whose environment is
  built vs the same run in a hand-made image of the same content on the cluster (the
  Docker start bench's method), and vs the same local run with that venv's interpreter
  named by hand (user-managed); medians of ``--runs`` runs, ratio and difference;
- a changed spec, one package more: the rebuild.

    python -m bench.environments [--runs 10] [--image runyard-run-base:bookworm]

Starts a private Redis, the API, the scheduler and two workers as real processes on this
machine's Docker engine; removes the images it built. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from uv import find_uv_bin

from runyard.core import Environment
from tests.support.runs import CLUSTERS_OWN, packages_environment, submit
from tests.support.services import RUN_IMAGE, Stack, redis_server
from worker.environments.sources import host_sources

REQUIREMENTS = ["numpy==2.2.6", "pandas==2.3.3", "scikit-learn==1.9.1"]
CHANGED = [*REQUIREMENTS, "tqdm"]  # the same spec, one package more
# Timed to the moment the script itself runs: it prints the clock first thing.
SCRIPT = "import time\nprint('started', time.time(), flush=True)\n"


def started_at(output: str) -> float:
    line = next(x for x in output.splitlines() if x.startswith("started "))
    return float(line.split()[1])


def timed(steps: Callable[[], None]) -> float:
    began = time.perf_counter()
    steps()
    return time.perf_counter() - began


def run(command: list[str | Path], env: dict[str, str]) -> str:
    return subprocess.run(
        [str(c) for c in command], env=env, check=True, capture_output=True, text=True
    ).stdout


def pip_cold(root: Path, requirements: Path, *options: str) -> tuple[float, list[str]]:
    """``python -m venv`` + ``pip install -r``, pip's cache fresh."""
    venv = root / f"pip-venv-{requirements.stem}"
    env = {**os.environ, "PIP_CACHE_DIR": str(root / f"pip-cache-{requirements.stem}")}
    install = [venv / "bin/python", "-m", "pip", "install", "-q", *options, "-r", requirements]
    seconds = timed(lambda: (run([sys.executable, "-m", "venv", venv], env), run(install, env)))
    return seconds, run([venv / "bin/python", "-m", "pip", "freeze"], env).split()


def uv_cold(root: Path, requirements: Path) -> tuple[float, list[str]]:
    """``uv venv`` + ``uv pip install -r`` with this host's pip sources, uv's cache fresh."""
    uv, venv = find_uv_bin(), root / "uv-venv"
    env = {**os.environ, "UV_CACHE_DIR": str(root / "uv-cache-alone")}
    python = ["--python", str(venv / "bin/python")]
    seconds = timed(
        lambda: (
            run([uv, "venv", "-q", "--python", sys.executable, venv], env),
            run([uv, "pip", "install", "-q", *python, *host_sources(), "-r", requirements], env),
        )
    )
    return seconds, run([uv, "pip", "freeze", *python], env).split()


def submit_and_log(
    stack: Stack, folder: Path, cluster: str, environment: object
) -> tuple[float, str]:
    """Seconds from Experiment.submit() to the script running, and the run's log (the run
    must complete)."""
    began = time.time()
    handle = submit(stack.url, folder, "noop.py", cluster, experiment="bench-env",
                    environment=environment)  # type: ignore[arg-type]  # fmt: skip
    handle.wait_for_completion()
    log = stack.client().logs(handle.id)
    return started_at(log) - began, log


def submit_to_running(stack: Stack, folder: Path, cluster: str, environment: object) -> float:
    return submit_and_log(stack, folder, cluster, environment)[0]


def built(stack: Stack, folder: Path, cluster: str, environment: Environment) -> dict:
    """One run that needs ``environment`` built: submit -> Running, the build's own time
    (from its log) and hash."""
    running, log = submit_and_log(stack, folder, cluster, environment)
    found = re.search(r"Environment ([0-9a-f]{32}): built in ([0-9.]+) s \((\d+) packages", log)
    if found is None:
        raise RuntimeError(f"nothing was built (already cached?):\n{log}")
    return {
        "running": running,
        "build": float(found[2]),
        "hash": found[1],
        "packages": int(found[3]),
    }


def hits(
    stack: Stack, folder: Path, runs: int, ours: tuple[str, object], theirs: tuple[str, object]
) -> tuple[list[float], list[float]]:
    """Submit -> Running, alternating the two sides (so drift hits both alike), after one
    warm-up run of each."""
    for cluster, environment in (ours, theirs):
        submit_to_running(stack, folder, cluster, environment)
    mine: list[float] = []
    other: list[float] = []
    for _ in range(runs):
        mine.append(submit_to_running(stack, folder, *ours))
        other.append(submit_to_running(stack, folder, *theirs))
    return mine, other


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.0f} ms"


def print_build(label: str, seconds: float, packages: int, running: float | None = None) -> None:
    then = f", {running:5.1f} s submit -> Running" if running is not None else ""
    print(f"  {label:40} {seconds:6.1f} s build{then} ({packages} packages)")


def print_hit(label: str, ours: list[float], theirs: list[float], versus: str) -> None:
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"  {label:40} median {ms(a)}")
    print(f"  {versus:40} median {ms(b)}")
    print(f"  -> the hit adds {(a - b) * 1000:+.0f} ms (ratio {a / b:.2f}x)")


HAND_IMAGE = "runyard-bench-hand:sklearn"


def worker_settings(root: Path, name: str) -> dict[str, str]:
    """A worker with empty caches of its own (uv's and its environments')."""
    return {
        "UV_CACHE_DIR": str(root / f"uv-cache-{name}"),
        "RUNYARD_ENV_CACHE_DIR": str(root / f"cache-{name}"),
    }


def runyard_side(stack: Stack, root: Path, folder: Path, image: str, runs: int) -> dict:
    """Cold builds, cache hits against hand-made equivalents, and a changed spec's rebuild,
    through a local cluster and a Docker cluster; the images it made listed in ``made``."""
    client = stack.client()
    client.create_cluster("bench-env-local", nodes=1)
    # The hand-made side: the built image's content under a name of its own (tagged once
    # built) as its cluster's image; the built venv's interpreter named by hand.
    for name, cluster_image in (("bench-env-docker", image), ("bench-env-hand", HAND_IMAGE)):
        container = {"image": cluster_image, "memory_mib": 1024}
        client.create_cluster(name, nodes=1, executor="docker", container=container)
    stack.start_worker("bench-env-local", name="bench-local", env=worker_settings(root, "local"))
    stack.start_worker(
        "bench-env-docker", "bench-env-hand", name="bench-docker",
        env=worker_settings(root, "docker"),
    )  # fmt: skip
    env = packages_environment("bench-sklearn", REQUIREMENTS)
    found: dict = {"made": []}
    found["cold_local"] = built(stack, folder, "bench-env-local", env)
    found["cold_docker"] = built(stack, folder, "bench-env-docker", env)
    found["made"].append(f"runyard-env:{found['cold_docker']['hash']}")
    subprocess.run(["docker", "tag", found["made"][0], HAND_IMAGE], check=True)
    found["made"].append(HAND_IMAGE)

    found["docker_hit"], found["docker_hand"] = hits(
        stack, folder, runs, ("bench-env-docker", env), ("bench-env-hand", CLUSTERS_OWN)
    )
    venv = root / "cache-local" / "venvs" / found["cold_local"]["hash"]
    by_hand = Environment("bench-hand-venv")
    by_hand.python.user_managed_dependencies = True
    by_hand.python.interpreter_path = str(venv / "bin" / "python")
    found["local_hit"], found["local_hand"] = hits(
        stack, folder, runs, ("bench-env-local", env), ("bench-env-local", by_hand)
    )

    changed = packages_environment("bench-sklearn", CHANGED)
    found["changed_local"] = built(stack, folder, "bench-env-local", changed)
    found["changed_docker"] = built(stack, folder, "bench-env-docker", changed)
    found["made"].append(f"runyard-env:{found['changed_docker']['hash']}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default=RUN_IMAGE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runyard-bench-env-") as tmp:
        root = Path(tmp)
        requirements = root / "requirements.txt"
        requirements.write_text("\n".join(REQUIREMENTS) + "\n")
        folder = root / "src"
        folder.mkdir()
        (folder / "noop.py").write_text(SCRIPT)
        folder.chmod(0o755)
        pip_seconds, pip_packages = pip_cold(root, requirements)
        uv_seconds, uv_packages = uv_cold(root, requirements)
        # pip and uv read the same sources but choose differently: pip takes the newest
        # release on any index (PyPI here), uv the first index that has the package (this
        # host's local ones). pip once more, given exactly what uv chose.
        pinned = root / "pinned.txt"
        pinned.write_text("\n".join(uv_packages) + "\n")
        pinned_seconds, _ = pip_cold(root, pinned, "--no-deps")
        with redis_server(root / "redis") as redis:
            stack = Stack(root=root / "stack", redis=redis)
            stack.start()
            found: dict = {"made": []}
            try:
                found = runyard_side(stack, root, folder, args.image, args.runs)
            finally:
                stack.stop()
                made = found["made"] or [HAND_IMAGE]
                subprocess.run(["docker", "rmi", *made], capture_output=True, check=False)

    print(f"Environment builds: {' '.join(REQUIREMENTS)}, from this host's pip configuration")
    print(f"  (uv sources: {' '.join(host_sources()) or 'uv defaults'})")
    print("Cold build, empty caches:")
    print_build("pip: python -m venv + pip install -r", pip_seconds, len(pip_packages))
    print_build("pip, uv's choice pinned (--no-deps)", pinned_seconds, len(uv_packages))
    print_build("uv alone: uv venv + uv pip install -r", uv_seconds, len(uv_packages))
    for label, key in (
        ("runyard, local venv", "cold_local"),
        ("runyard, Docker image", "cold_docker"),
    ):
        cold = found[key]
        print_build(label, cold["build"], cold["packages"], cold["running"])
    for versus, base in (("pip's", pip_seconds), ("pinned pip's", pinned_seconds)):
        print(
            f"  -> build time / {versus}: uv alone {uv_seconds / base:.2f}x, runyard venv "
            f"{found['cold_local']['build'] / base:.2f}x, runyard image "
            f"{found['cold_docker']['build'] / base:.2f}x"
        )
    if sorted(pip_packages) != sorted(uv_packages):
        print(f"  resolved by pip: {' '.join(sorted(pip_packages))}")
        print(f"  resolved by uv:  {' '.join(sorted(uv_packages))}")
    print(f"Cache hit, submit -> Running, median of {args.runs} runs each:")
    print_hit("Docker, built environment", found["docker_hit"], found["docker_hand"],
              "Docker, the same image made by hand")  # fmt: skip
    print_hit("local, built environment", found["local_hit"], found["local_hand"],
              "local, its venv named by hand")  # fmt: skip
    print("Changed spec (one package more: tqdm), rebuild:")
    for label, key in (
        ("runyard, local venv", "changed_local"),
        ("runyard, Docker image", "changed_docker"),
    ):
        again = found[key]
        print_build(label, again["build"], again["packages"], again["running"])


if __name__ == "__main__":
    main()
