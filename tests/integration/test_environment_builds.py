"""Environments that build themselves: a run names pip (and conda) packages, the worker
builds them from its host's own package index (here an offline wheel folder made by the
test, as a host would configure pip: PIP_NO_INDEX + PIP_FIND_LINKS) into a cached venv
(local clusters) or image (Docker clusters), and the script imports them."""

from __future__ import annotations

import base64
import fcntl
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import pytest

from runyard.core import Environment, Run
from runyard.core.conda_dependencies import CondaDependencies
from runyard.errors import BadRequirement, RunFailed
from tests.support.runs import packages_environment, service_lines, submit, wait_for_status, write
from tests.support.services import Stack, free_port, runyard, unique
from tests.support.wheels import make_sdist, make_wheel, offline_index, unanswering_index
from worker.app import service_id

BUILD_LOG = "logs/environment_build.log"

SCRIPT = """
import tinypkg, other_pkg
from runyard.core import Run
print("TINY", tinypkg.VERSION, flush=True)
Run.get_context().log("tiny", float(tinypkg.VERSION))
"""


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """The host's offline package index: tinypkg 1.0 and 1.1, other-pkg needing tinypkg."""
    folder = tmp_path / "wheelhouse"
    make_wheel(folder, "tinypkg", "1.0")
    make_wheel(folder, "tinypkg", "1.1")
    make_wheel(folder, "other-pkg", "2.0", requires=["tinypkg>=1"])
    return folder


def builds_in(log: str) -> list[str]:
    """The hashes of the environments built for a run (its log's lines say so)."""
    return re.findall(r"Environment ([0-9a-f]{32}): built in", log)


def local_cluster(stack: Stack) -> str:
    name = unique("envs")
    stack.client().create_cluster(name, nodes=2)
    return name


def docker_cluster(stack: Stack, image: str) -> str:
    name = unique("envbox")
    stack.client().create_cluster(
        name, nodes=2, executor="docker", container={"image": image, "memory_mib": 256}
    )
    return name


@pytest.fixture
def built_images() -> Any:
    """Removes the runyard-env images a test built (and only those)."""
    made: list[str] = []
    yield made
    for build_hash in made:
        subprocess.run(["docker", "rmi", f"runyard-env:{build_hash}"], capture_output=True)


def test_a_local_run_gets_its_packages_built_once_then_from_the_cache(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = local_cluster(stack)
    cache = tmp_path / "cache"
    workers.start(cluster, env=offline_index(wheelhouse, cache))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = packages_environment("tiny", ["other-pkg", "tinypkg==1.0"])

    first = submit(stack.url, folder, "train.py", cluster, environment=env)
    first.wait_for_completion()
    log = stack.client().logs(first.id)
    assert "TINY 1.0" in log
    assert first.get_metrics()["tiny"] == 1.0
    [build_hash] = builds_in(log)
    assert (cache / "venvs" / build_hash / "bin" / "python").exists()
    # Each line of uv's output was in the run's log while it prepared, and is kept.
    assert "[runyard]  + tinypkg==1.0" in service_lines(log)
    assert BUILD_LOG in first.get_file_names()
    first.download_file(BUILD_LOG, tmp_path / "build.log")
    assert " + other-pkg==2.0" in (tmp_path / "build.log").read_text()

    # The same packages under another name, in another order: no build at all.
    again = packages_environment("tiny-again", ["tinypkg == 1.0", "Other_Pkg"])
    second = submit(stack.url, folder, "train.py", cluster, environment=again)
    second.wait_for_completion()
    log = stack.client().logs(second.id)
    assert "TINY 1.0" in log
    assert builds_in(log) == []
    assert f"[runyard] Environment {build_hash}: cache hit (venv " in log
    assert BUILD_LOG not in second.get_file_names()
    # The run records what it ran with: the first build's hash and packages, from the cache.
    used = stack.client().get_run(second.id)["environment_used"]
    assert (used["name"], used["hash"], used["cached"]) == ("tiny-again", build_hash, True)
    assert used["packages"] == ["other-pkg==2.0", "tinypkg==1.0"]
    assert stack.client().get_run(first.id)["environment_used"]["cached"] is False

    # One package changed: a build of its own.
    changed = packages_environment("tiny", ["other-pkg", "tinypkg==1.1"])
    third = submit(stack.url, folder, "train.py", cluster, environment=changed)
    third.wait_for_completion()
    log = stack.client().logs(third.id)
    assert "TINY 1.1" in log
    assert len(builds_in(log)) == 1 and builds_in(log) != [build_hash]


def test_two_runs_needing_one_missing_environment_build_it_once(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = local_cluster(stack)
    workers.start(cluster, slots=2, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = packages_environment("shared", ["other-pkg"])
    runs = [submit(stack.url, folder, "train.py", cluster, environment=env) for _ in range(2)]
    for run in runs:
        run.wait_for_completion()
    logs = [stack.client().logs(run.id) for run in runs]
    assert sum(len(builds_in(log)) for log in logs) == 1
    assert sum("cache hit" in log for log in logs) == 1


@pytest.mark.parametrize(
    ("packages", "conda", "reason"),
    [
        pytest.param(
            ["nosuchpkg"],
            [],
            "package 'nosuchpkg' was not found in the worker's package index",
            id="missing-package",
        ),
        pytest.param(
            ["tinypkg==9.9"],
            [],
            "no version of the package matches 'tinypkg==9.9' in the worker's package index",
            id="no-such-version",
        ),
        pytest.param(
            [],
            ["cudatoolkit=11.8"],
            "conda package 'cudatoolkit' is not on the package index, and this worker has no "
            "conda channel",
            id="conda-only-package",
        ),
    ],
)
def test_a_failed_build_fails_the_run_with_the_reason_and_the_worker_goes_on(
    stack: Stack,
    workers,
    tmp_path: Path,
    wheelhouse: Path,
    packages: list[str],
    conda: list[str],
    reason: str,
) -> None:
    cluster = local_cluster(stack)
    cache = tmp_path / "cache"
    workers.start(cluster, env=offline_index(wheelhouse, cache))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = packages_environment("broken", packages, conda_packages=conda)
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    record = stack.client().get_run(run.id)
    assert record["failure_reason"].startswith(f"environment build failed: {reason}")
    assert "installer: " in record["failure_reason"]  # uv's own last lines follow
    assert BUILD_LOG in Run(run.experiment, run.id).get_file_names()
    assert list((cache / "venvs").iterdir()) == []
    assert list((cache / "staging").iterdir()) == []

    fine = submit(
        stack.url,
        folder,
        "train.py",
        cluster,
        environment=packages_environment("ok", ["other-pkg"]),
    )
    fine.wait_for_completion()


def test_a_build_past_its_timeout_is_stopped_and_leaves_nothing(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = local_cluster(stack)
    cache = tmp_path / "cache"
    with unanswering_index() as index:  # the host's index takes the request, never answers
        env = offline_index(wheelhouse, cache, RUNYARD_ENV_BUILD_TIMEOUT_SECONDS="3")
        del env["PIP_NO_INDEX"], env["PIP_FIND_LINKS"]
        workers.start(cluster, env={**env, "PIP_INDEX_URL": index})
        folder = write(tmp_path / "src", {"train.py": SCRIPT})
        run = submit(
            stack.url,
            folder,
            "train.py",
            cluster,
            environment=packages_environment("slow", ["tinypkg"]),
        )
        with pytest.raises(RunFailed):
            run.wait_for_completion()
    reason = stack.client().get_run(run.id)["failure_reason"]
    assert reason == "environment build timed out after 3 s"
    assert list((cache / "venvs").iterdir()) == []
    assert list((cache / "staging").iterdir()) == []
    installers = subprocess.run(
        ["pgrep", "-f", f"{cache}/"], capture_output=True, text=True, check=False
    )
    assert installers.stdout == ""  # the installer waiting on the index is gone


@pytest.mark.parametrize("executor", ["local", "docker"])
def test_a_package_with_no_wheel_fails_clearly_and_its_code_never_runs_on_the_host(
    request: pytest.FixtureRequest,
    stack: Stack,
    workers,
    tmp_path: Path,
    wheelhouse: Path,
    executor: str,
) -> None:
    ran = tmp_path / "build-backend-ran"
    make_sdist(wheelhouse, "srconly", "1.0", marker=ran)  # its build code leaves a mark
    if executor == "local":
        cluster = local_cluster(stack)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"  # the worker's own
        target = f"Python {python} on {sysconfig.get_platform()}"
    else:
        cluster = docker_cluster(stack, request.getfixturevalue("run_image"))
        target = f"Python 3.11 on {platform.machine()}-manylinux_2_36"  # Debian bookworm's
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = packages_environment("source-only", ["tinypkg", "srconly"])
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    assert (
        stack.client()
        .get_run(run.id)["failure_reason"]
        .startswith(
            f"environment build failed: package 'srconly' has no wheel for {target} in the "
            "worker's package index; Runyard installs wheels only: building from source would "
            "run the package's code on the worker host (installer: "
        )
    )
    assert not ran.exists()


@pytest.mark.parametrize("planted", ["in-a-folder-anyone-writes", "owned-by-another-user"])
def test_an_interpreter_a_run_could_have_planted_is_never_run_by_the_worker(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path, planted: str
) -> None:
    """The worker runs an interpreter it builds a venv from as its own user (root here),
    with its own settings: one that a run's user could have put in place never runs."""
    folder = Path(tempfile.mkdtemp(prefix="runyard-builder-planted-"))
    try:
        ran = folder / "ran"
        fake = folder / "python3"
        fake.write_text(f'#!/bin/sh\nenv > {ran}\nexec /usr/bin/python3 "$@"\n')
        fake.chmod(0o755)
        if planted == "in-a-folder-anyone-writes":
            folder.chmod(0o777)
            why = f"{folder} may be written by users other than its owner"
        else:
            os.chown(fake, 65534, 65534)
            why = f"{fake} belongs to user 65534, not to root or the worker's user"
        cluster = local_cluster(stack)
        workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
        source = write(tmp_path / "src", {"train.py": SCRIPT})
        env = packages_environment("planted", ["tinypkg"])
        env.python.interpreter_path = str(fake)
        run = submit(stack.url, source, "train.py", cluster, environment=env)
        with pytest.raises(RunFailed):
            run.wait_for_completion()
        assert stack.client().get_run(run.id)["failure_reason"] == (
            f"interpreter {fake} is not one this worker builds an environment from: {why}, "
            "so a run could have put it there; use an interpreter whose path only root or "
            "the worker's user can change"
        )
        assert not ran.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_cache_evicts_the_least_recently_used_environment_but_never_one_in_use(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    # Each environment holds about 0.6 MiB (a data file that does not compress); the cache
    # may hold 1 MiB.
    blob = os.urandom(600 * 1024).hex()[: 600 * 1024]
    for name in ("bulk-live", "bulk-old", "bulk-new"):
        module = name.replace("-", "_")
        make_wheel(
            wheelhouse, name, "1.0", {f"{module}/__init__.py": "", f"{module}/data.txt": blob}
        )
    cluster = local_cluster(stack)
    cache = tmp_path / "cache"
    workers.start(
        cluster, slots=2, env=offline_index(wheelhouse, cache, RUNYARD_ENV_CACHE_MAX_MIB="1")
    )
    folder = write(tmp_path / "src", {"wait.py": "import time\ntime.sleep(600)\n", "ok.py": ""})

    live = submit(
        stack.url, folder, "wait.py", cluster, environment=packages_environment("l", ["bulk-live"])
    )
    wait_for_status(stack, live.id, {"Running"})
    old = submit(
        stack.url, folder, "ok.py", cluster, environment=packages_environment("o", ["bulk-old"])
    )
    old.wait_for_completion()
    new = submit(
        stack.url, folder, "ok.py", cluster, environment=packages_environment("n", ["bulk-new"])
    )
    new.wait_for_completion()

    [live_hash] = builds_in(stack.client().logs(live.id))
    [old_hash] = builds_in(stack.client().logs(old.id))
    log = stack.client().logs(new.id)
    [new_hash] = builds_in(log)
    # The live run's environment is the least recently used one, and is kept.
    assert f"Environment {old_hash}: evicted from the cache" in log
    assert live_hash not in log
    assert {p.name for p in (cache / "venvs").iterdir()} == {live_hash, new_hash}
    assert stack.client().get_run(live.id)["status"] == "Running"
    live.cancel()
    wait_for_status(stack, live.id, {"Canceled"})


def test_a_requirement_cannot_reach_a_shell_or_a_path(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = local_cluster(stack)
    cache = tmp_path / "cache"
    workers.start(cluster, env=offline_index(wheelhouse, cache))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    marker = tmp_path / "escaped"
    for hostile in (f"tinypkg; touch {marker}", f"$(touch {marker})", "../../../etc/passwd"):
        # Refused at submit, naming it: no run is made, no installer ever sees it.
        with pytest.raises(BadRequirement) as refused:  # by the SDK, else by the API
            hostile_environment = packages_environment("h", [hostile])
            submit(stack.url, folder, "train.py", cluster, environment=hostile_environment)
        assert refused.value.message.startswith("pip package")
        assert hostile in refused.value.message
    assert stack.client().list_runs(cluster=cluster) == []
    assert not marker.exists()


# --- Docker clusters ------------------------------------------------------------------------


def test_a_docker_run_gets_an_image_built_with_no_network_then_reused(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path, built_images
) -> None:
    cluster = docker_cluster(stack, run_image)
    # Two workers on one engine: the build lock is the cluster's (Redis), not a worker's.
    env = offline_index(wheelhouse, tmp_path / "cache")
    workers.start(cluster, env=env)
    workers.start(cluster, env={**env, "RUNYARD_ENV_CACHE_DIR": str(tmp_path / "cache-2")})
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    spec = packages_environment("tiny", ["other-pkg", "tinypkg==1.0"])
    runs = [submit(stack.url, folder, "train.py", cluster, environment=spec) for _ in range(2)]
    for run in runs:
        run.wait_for_completion()
    logs = [stack.client().logs(run.id) for run in runs]
    built = [h for log in logs for h in builds_in(log)]
    built_images.extend(built)
    assert len(built) == 1
    assert all("TINY 1.0" in log for log in logs)
    assert runs[0].get_metrics()["tiny"] == 1.0
    image = f"runyard-env:{built[0]}"
    found = subprocess.run(
        ["docker", "image", "inspect", "-f", '{{index .Config.Labels "runyard.env"}}', image],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == built[0]

    third = submit(stack.url, folder, "train.py", cluster, environment=spec)
    third.wait_for_completion()
    log = stack.client().logs(third.id)
    assert f"[runyard] Environment {built[0]}: cache hit (image {image})" in log
    assert builds_in(log) == []


def test_a_docker_environment_asking_for_another_python_fails_clearly(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = packages_environment("py", ["tinypkg"], python_version="3.7")
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    assert (
        stack.client()
        .get_run(run.id)["failure_reason"]
        .startswith(
            "the environment asks for Python 3.7, but its image's /usr/bin/python3 is Python 3.11"
        )
    )


def dockerfile_environment(name: str, dockerfile: str) -> Environment:
    environment = packages_environment(name, ["tinypkg"])
    environment.docker.base_dockerfile = dockerfile
    return environment


def test_a_base_dockerfile_is_built_with_no_network(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    reach = "import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)"
    env = dockerfile_environment("net", f'FROM {run_image}\nRUN ["python3", "-c", "{reach}"]\n')
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    reason = stack.client().get_run(run.id)["failure_reason"]
    assert reason.startswith(
        "the environment's base_dockerfile failed to build (builds have no network"
    )
    assert "Network is unreachable" in reason


def test_a_base_dockerfile_image_missing_here_is_pulled_before_the_build_not_during_it(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    """The classic builder pulls a FROM image it lacks with the engine's own network and
    credentials, whatever the build's ``pull``: the worker pulls it first, as it does a
    run's image, and the build never starts without it."""
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    absent = f"127.0.0.1:{free_port()}/runyard-fixb-absent:1"  # no registry listens there
    run = submit(
        stack.url, folder, "train.py", cluster,
        environment=dockerfile_environment("absent", f"FROM {absent}\nRUN true\n"),
    )  # fmt: skip
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    reason = stack.client().get_run(run.id)["failure_reason"]
    assert reason.startswith(f"image {absent!r} is not on this worker and cannot be pulled: ")
    log = stack.client().logs(run.id)
    assert f"[runyard] Image {absent}: not on this worker; pulling it" in log
    assert "Step 1/" not in log  # no build was started


def test_a_base_image_whose_onbuild_step_would_fetch_is_not_built_on(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    """An image's ONBUILD steps run in the build FROM it: one that ADDs a URL would make
    the engine fetch it (here from a socket on the worker's host), so no build starts."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/secret"
    image = f"runyard-fixb-onbuild:{unique('t')}"
    context = write(
        tmp_path / "onbuild", {"Dockerfile": f"FROM {run_image}\nONBUILD ADD {url} /s\n"}
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", image, str(context)], check=True, capture_output=True
    )
    try:
        cluster = docker_cluster(stack, image)
        workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
        folder = write(tmp_path / "src", {"train.py": SCRIPT})
        environment = packages_environment("onbuild", ["tinypkg"])
        run = submit(stack.url, folder, "train.py", cluster, environment=environment)
        with pytest.raises(RunFailed):
            run.wait_for_completion()
        assert stack.client().get_run(run.id)["failure_reason"] == (
            f"image {image!r} cannot be built on: its ONBUILD step: ADD {url}: builds have no "
            "network and fetch nothing; copy files in with the snapshot, or name Python "
            "packages as packages"
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()
        subprocess.run(["docker", "rmi", image], capture_output=True)


def test_a_docker_build_past_its_timeout_is_cancelled(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    settings = {"RUNYARD_ENV_BUILD_TIMEOUT_SECONDS": "3"}
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache", **settings))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = dockerfile_environment("slow", f"FROM {run_image}\nRUN sleep 120\n")
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    reason = stack.client().get_run(run.id)["failure_reason"]
    assert reason == "environment build timed out after 3 s"
    # The build was stopped: its step's container is gone.
    [step] = re.findall(r"---> Running in ([0-9a-f]+)", stack.client().logs(run.id))
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"id={step}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout == ""


def test_a_local_environment_gets_the_python_it_asks_for_or_fails_clearly(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = local_cluster(stack)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT + "import sys\nprint(sys.version)\n"})
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    ok = packages_environment("py", ["other-pkg"], python_version=here)
    run = submit(stack.url, folder, "train.py", cluster, environment=ok)
    run.wait_for_completion()
    assert f"\n{here}." in stack.client().logs(run.id)

    missing = packages_environment("py", ["other-pkg"], python_version="3.99")
    run = submit(stack.url, folder, "train.py", cluster, environment=missing)
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    assert (
        stack.client()
        .get_run(run.id)["failure_reason"]
        .startswith("the environment asks for Python 3.99, which this worker does not have")
    )


def test_a_failed_docker_build_leaves_no_image_behind(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = dockerfile_environment("half", f"FROM {run_image}\nRUN mkdir /opt/extra\n")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["nosuchpkg"])
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    log = stack.client().logs(run.id)
    assert "[runyard] Successfully built " in log  # its base_dockerfile was built
    [build_hash] = re.findall(r"Environment ([0-9a-f]{32}): not on this worker", log)
    left = subprocess.run(
        ["docker", "images", "-q", "--filter", f"label=runyard.env.stage={build_hash}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout == ""
    assert list((tmp_path / "cache" / "staging").iterdir()) == []


def test_a_venv_is_usable_by_the_runs_own_user(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    """Runs as their own user (RUNYARD_RUN_AS) import the venv a root worker built (the
    cache is where it is by default: under the worker's work dir)."""
    runs_home = Path(tempfile.mkdtemp(prefix="runyard-builder-runs-"))  # not pytest's 0700
    runs_home.chmod(0o711)
    try:
        cluster = local_cluster(stack)
        env = offline_index(wheelhouse, tmp_path / "unused")
        del env["RUNYARD_ENV_CACHE_DIR"]
        settings = {"RUNYARD_RUN_AS": "65534:65534", "RUNYARD_WORK_DIR": str(runs_home)}
        workers.start(cluster, env={**env, **settings})
        folder = write(
            tmp_path / "src", {"train.py": SCRIPT + "import os\nprint('uid', os.getuid())\n"}
        )
        spec = packages_environment("own-user", ["other-pkg"])
        spec.python.interpreter_path = "/usr/bin/python3"  # one that user can start
        run = submit(stack.url, folder, "train.py", cluster, environment=spec)
        run.wait_for_completion()
        log = stack.client().logs(run.id)
        assert "uid 65534" in log and "TINY 1.1" in log
        [build_hash] = builds_in(log)
        assert (runs_home / "environments" / "venvs" / build_hash).is_dir()
    finally:
        shutil.rmtree(runs_home, ignore_errors=True)


def test_docker_eviction_removes_the_oldest_unused_image_and_keeps_one_in_use(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path, built_images
) -> None:
    blob = os.urandom(600 * 1024).hex()[: 600 * 1024]
    for name in ("bulk-live", "bulk-old", "bulk-new"):
        module = name.replace("-", "_")
        files = {f"{module}/__init__.py": "", f"{module}/data.txt": blob}
        make_wheel(wheelhouse, name, "1.0", files)
    cluster = docker_cluster(stack, run_image)
    settings = {"RUNYARD_ENV_CACHE_MAX_MIB": "1"}
    workers.start(cluster, slots=2, env=offline_index(wheelhouse, tmp_path / "cache", **settings))
    folder = write(tmp_path / "src", {"wait.py": "import time\ntime.sleep(600)\n", "ok.py": ""})

    def run_in(script: str, package: str) -> Run:
        env = packages_environment(package, [package])
        return submit(stack.url, folder, script, cluster, environment=env)

    live = run_in("wait.py", "bulk-live")
    wait_for_status(stack, live.id, {"Running"})
    old = run_in("ok.py", "bulk-old")
    old.wait_for_completion()
    new = run_in("ok.py", "bulk-new")
    new.wait_for_completion()
    [live_hash] = builds_in(stack.client().logs(live.id))
    [old_hash] = builds_in(stack.client().logs(old.id))
    [new_hash] = builds_in(stack.client().logs(new.id))
    built_images.extend([live_hash, old_hash, new_hash])
    assert f"Environment {old_hash}: evicted from the cache (image" in stack.client().logs(new.id)
    images = subprocess.run(
        ["docker", "images", "--format", "{{.Tag}}", "runyard-env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert old_hash not in images
    assert live_hash in images and new_hash in images
    live.cancel()
    wait_for_status(stack, live.id, {"Canceled"})


def run_tiny_in_docker(stack: Stack, folder: Path, cluster: str, built_images: list[str]) -> str:
    """Runs train.py needing tinypkg on a Docker cluster to Completed; its log. The image
    it built goes with the test (``built_images``), even when the run fails."""
    environment = packages_environment("tiny", ["other-pkg", "tinypkg==1.0"])
    run = submit(stack.url, folder, "train.py", cluster, environment=environment)
    ended = run.wait_for_completion(raise_on_error=False)
    log = stack.client().logs(run.id)
    built_images.extend(re.findall(r"Environment ([0-9a-f]{32}): not on this worker", log))
    assert ended["status"] == "Completed", log
    return log


def test_a_registry_that_cannot_be_reached_is_a_warning_and_the_run_goes_on(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path, built_images
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # an address the engine trusts; nothing listens
    cluster = unique("envbox")
    container = {"image": run_image, "memory_mib": 256, "registry": nowhere}
    stack.client().create_cluster(cluster, nodes=2, executor="docker", container=container)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    log = run_tiny_in_docker(stack, folder, cluster, built_images)
    assert "TINY 1.0" in log
    [pulling] = [line for line in log.splitlines() if "cannot pull from" in line]
    assert pulling.startswith(f"[runyard] Warning: cannot pull from image registry {nowhere}: ")
    assert pulling.endswith("; building the environment here instead")
    [pushing] = [line for line in log.splitlines() if "cannot push to" in line]
    assert pushing.startswith(f"[runyard] Warning: cannot push to image registry {nowhere}: ")
    assert pushing.endswith("; the image stays on this worker only")


def test_a_docker_environment_built_under_umask_077_is_readable_by_the_runs_user(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path, built_images
) -> None:
    """A host whose umask is 077 makes the installed files its own only; the image copies
    them with their modes, and the run's user (the cluster's, not root) must import them."""
    cluster = docker_cluster(stack, run_image)
    umask_077 = ["sh", "-c", 'umask 077 && exec "$@"', "umask-077"]
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"), prefix=umask_077)
    folder = write(
        tmp_path / "src", {"train.py": SCRIPT + "import os\nprint('uid', os.getuid())\n"}
    )
    log = run_tiny_in_docker(stack, folder, cluster, built_images)
    assert "uid 1000" in log and "TINY 1.0" in log


# --- Stopping a build: a cancel, a time limit, what a dead worker left ----------------------


def wait_in_log(stack: Stack, run_id: str, text: str) -> str:
    """The first line of the run's log holding ``text``, read as ``runyard logs --follow``
    streams it (returns once the run got that far)."""
    following = subprocess.Popen(
        runyard("logs", run_id, "--follow"), env=stack.env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert following.stdout is not None
        for line in following.stdout:
            if text in line:
                return line
        raise AssertionError(f"the log of {run_id} ended without {text!r}")
    finally:
        following.kill()
        following.communicate()


def ended_canceled(stack: Stack, run: Run) -> None:
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Canceled"
    record = stack.client().get_run(run.id)
    assert record["failure_reason"] == "canceled before it started"
    assert "[runyard] Canceled before the script started" in stack.client().logs(run.id)


def test_a_local_build_stops_when_its_run_is_canceled_and_leaves_nothing(
    stack: Stack, workers, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = local_cluster(stack)
    cache = tmp_path / "cache"
    with unanswering_index() as index:  # the installer waits on it for as long as it lets it
        env = offline_index(wheelhouse, cache)
        del env["PIP_NO_INDEX"], env["PIP_FIND_LINKS"]
        workers.start(cluster, env={**env, "PIP_INDEX_URL": index, "UV_HTTP_TIMEOUT": "600"})
        folder = write(tmp_path / "src", {"train.py": SCRIPT})
        env_spec = packages_environment("waits", ["tinypkg"])
        run = submit(stack.url, folder, "train.py", cluster, environment=env_spec)
        wait_in_log(stack, run.id, "Package sources: --index-url")  # the installer is next
        run.cancel()
        ended_canceled(stack, run)
    assert list((cache / "venvs").iterdir()) == []
    assert list((cache / "staging").iterdir()) == []
    installers = subprocess.run(
        ["pgrep", "-f", f"{cache}/"], capture_output=True, text=True, check=False
    )
    assert installers.stdout == ""


def test_a_docker_build_stops_when_its_run_is_canceled_and_leaves_nothing(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    cluster = docker_cluster(stack, run_image)
    cache = tmp_path / "cache"
    workers.start(cluster, env=offline_index(wheelhouse, cache))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    env = dockerfile_environment("waits", f"FROM {run_image}\nRUN sleep 600\n")
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    [step] = re.findall(r"---> Running in ([0-9a-f]+)", wait_in_log(stack, run.id, "Running in"))
    run.cancel()
    ended_canceled(stack, run)
    [build_hash] = re.findall(
        r"Environment ([0-9a-f]{32}): not on this worker", stack.client().logs(run.id)
    )
    for listing in (
        ["docker", "ps", "-aq", "--filter", f"id={step}"],
        ["docker", "images", "-q", "--filter", f"label=runyard.env.stage={build_hash}"],
    ):
        assert subprocess.run(listing, capture_output=True, text=True, check=True).stdout == ""
    assert list((cache / "staging").iterdir()) == []


@pytest.fixture
def python3_image(run_image: str) -> Any:
    """Makes images whose ``python3`` is a shell script of the test's (removed after it)."""
    made: list[str] = []

    def make(script: str) -> str:
        tag = unique("runyard-fixa2-python3").lower()
        made.append(tag)
        dockerfile = (
            f"FROM {run_image}\n"
            f"RUN echo {base64.b64encode(script.encode()).decode()} | base64 -d "
            "> /usr/local/bin/python3 "
            "&& chmod 755 /usr/local/bin/python3\n"
        )
        subprocess.run(
            ["docker", "build", "-q", "--network", "none", "-t", tag, "-"],
            input=dockerfile, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return tag

    yield make
    for tag in made:
        subprocess.run(["docker", "rmi", tag], capture_output=True)


def probe_containers(worker: str) -> str:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=runyard.worker={worker}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_an_image_whose_python_hangs_fails_the_build_at_its_timeout_and_leaves_nothing(
    stack: Stack, workers, python3_image: Any, tmp_path: Path, wheelhouse: Path
) -> None:
    image = python3_image("#!/bin/sh\nexec sleep 600\n")  # its "python3" never answers
    cluster = docker_cluster(stack, image)
    worker = unique("w-hangs")
    settings = {"RUNYARD_ENV_BUILD_TIMEOUT_SECONDS": "5"}
    workers.start(cluster, name=worker, env=offline_index(wheelhouse, tmp_path / "c", **settings))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    run = submit(
        stack.url, folder, "train.py", cluster, environment=packages_environment("h", ["tinypkg"])
    )
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    assert stack.client().get_run(run.id)["failure_reason"] == (
        "environment build timed out after 5 s"
    )
    assert probe_containers(worker) == ""


def test_the_image_s_python_is_asked_what_it_is_under_the_cluster_s_confinement(
    stack: Stack, workers, python3_image: Any, tmp_path: Path, wheelhouse: Path
) -> None:
    """The probe runs the image's own code: as the runs' user, no capabilities, no new
    privileges, the cluster's memory and pids limits, no network."""
    report = (
        "#!/bin/sh\n"
        'echo "uid=$(id -u)" $(grep -E "^(CapEff|NoNewPrivs):" /proc/self/status)'
        ' "memory=$(cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes'
        ' 2>/dev/null)" "pids=$(cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max'
        ' 2>/dev/null)" "networks="$(ls /sys/class/net)\n'
    )
    cluster = docker_cluster(stack, python3_image(report))
    worker = unique("w-probe")
    workers.start(cluster, name=worker, env=offline_index(wheelhouse, tmp_path / "cache"))
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    run = submit(
        stack.url, folder, "train.py", cluster, environment=packages_environment("p", ["tinypkg"])
    )
    with pytest.raises(RunFailed):
        run.wait_for_completion()
    reason = stack.client().get_run(run.id)["failure_reason"]
    assert reason.startswith("cannot ask the image's /usr/local/bin/python3 what it is: it said ")
    said = reason.split("it said ", 1)[1]
    for fact in (
        "uid=1000 ",
        "CapEff: 0000000000000000 ",
        "NoNewPrivs: 1 ",
        f"memory={256 * 1024 * 1024} ",
        "pids=1024 ",
        "networks=lo'",
    ):
        assert fact in said
    assert probe_containers(worker) == ""


def test_a_starting_worker_removes_what_dead_builds_left_and_nothing_in_use(
    stack: Stack, workers, run_image: str, tmp_path: Path, wheelhouse: Path
) -> None:
    cache = tmp_path / "cache"
    left, busy = "a" * 32, "b" * 32
    (cache / "staging" / f"{left}-4242-1" / "env").mkdir(parents=True)
    (cache / "staging" / f"{busy}-4243-1" / "env").mkdir(parents=True)
    (cache / "locks").mkdir()
    service = service_id(stack.redis.url)
    dead = {"runyard.service": service, "runyard.worker": unique("w-dead")}
    other = {"runyard.service": "another-deployment", "runyard.worker": unique("w-dead")}

    def stage_image(labels: dict[str, str]) -> str:
        flags = [f"--label={k}={v}" for k, v in {**labels, "runyard.env.stage": left}.items()]
        return subprocess.run(
            ["docker", "build", "-q", "--network", "none", *flags, "-"],
            input=f"FROM {run_image}\n", capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    ours, theirs = stage_image(dead), stage_image(other)
    probe = subprocess.run(
        ["docker", "create", *[f"--label={k}={v}" for k, v in dead.items()],
         "--label=runyard.env.probe=1", run_image, "true"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        with open(cache / "locks" / busy, "w") as building:  # a build on this host holds it
            fcntl.flock(building, fcntl.LOCK_EX)
            workers.start(local_cluster(stack), env=offline_index(wheelhouse, cache))
            # The worker is serving: what it found at start is swept.
            assert sorted(p.name for p in (cache / "staging").iterdir()) == [f"{busy}-4243-1"]

        def exists(kind: str, ref: str) -> bool:
            done = subprocess.run(["docker", kind, "inspect", ref], capture_output=True)
            return done.returncode == 0

        assert not exists("image", ours)
        assert not exists("container", probe)
        assert exists("image", theirs)  # another deployment's: not this worker's to remove
    finally:
        subprocess.run(["docker", "rm", "-f", probe], capture_output=True)
        subprocess.run(["docker", "rmi", ours, theirs], capture_output=True)
