"""Azure ML v1 code that names its packages runs on Runyard with only its imports changed,
on a cluster of local processes and on a Docker cluster: ``Environment.from_pip_requirements``
and ``CondaDependencies.create(pip_packages=[...])`` as the v1 how-tos ("use environments",
"train with ScriptRunConfig") write them. The packages are those of the test's own offline
package index (the worker host's pip points at it), so nothing is downloaded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.notebook import runyard_imports
from tests.support.runs import write
from tests.support.services import ADMIN_TOKEN, Stack, unique
from tests.support.wheels import make_wheel, offline_index

NOTEBOOK = """
from azureml.core import Environment, Experiment, ScriptRunConfig, Workspace
from azureml.core.conda_dependencies import CondaDependencies

ws = Workspace.from_config()

# Option 1: a pip requirements file
myenv = Environment.from_pip_requirements(name="myenv", file_path="requirements.txt")

# Option 2: conda dependencies made in code
conda_env = Environment(name="conda-env")
conda_dep = CondaDependencies.create(pip_packages=["greeting-pkg==2.0"])
conda_env.python.conda_dependencies = conda_dep

runs = []
for env in (myenv, conda_env):
    src = ScriptRunConfig(source_directory="src", script="train.py",
                          compute_target=COMPUTE_TARGET, environment=env)
    run = Experiment(workspace=ws, name="environments-howto").submit(config=src)
    run.wait_for_completion(show_output=True)
    runs.append(run)
"""

TRAIN = """
import greeting_pkg
from azureml.core import Run

run = Run.get_context()
print("greeting", greeting_pkg.VERSION)
run.log("greeting_version", float(greeting_pkg.VERSION))
"""


@pytest.fixture
def project(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook's folder: the workspace's config.json, requirements.txt and src/train.py."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"url": stack.url, "token": ADMIN_TOKEN}))
    (folder / "requirements.txt").write_text("# what train.py needs\ngreeting-pkg==1.0\n")
    write(folder / "src", {"train.py": runyard_imports(TRAIN)})
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    folder = tmp_path / "wheelhouse"
    for version in ("1.0", "2.0"):
        make_wheel(folder, "greeting-pkg", version)
    return folder


def run_the_notebook(cluster: str) -> list[Any]:
    scope: dict[str, Any] = {"COMPUTE_TARGET": cluster}
    exec(compile(runyard_imports(NOTEBOOK), "notebook", "exec"), scope)
    return scope["runs"]


def check(runs: list[Any], stack: Stack) -> None:
    for run, version in zip(runs, ("1.0", "2.0"), strict=True):
        assert run.get_status() == "Completed"
        assert run.get_metrics() == {"greeting_version": float(version)}
        assert f"greeting {version}" in stack.client().logs(run.id)
        used = run.get_details()["environmentUsed"]
        assert used["packages"] == [f"greeting-pkg=={version}"]
        assert used["cached"] is False
    assert [r.get_details()["environmentUsed"]["name"] for r in runs] == ["myenv", "conda-env"]


def test_on_a_cluster_of_local_processes(
    stack: Stack, workers, project: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    cluster = unique("howto-local")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    check(run_the_notebook(cluster), stack)


def test_on_a_docker_cluster(
    stack: Stack, workers, project: Path, wheelhouse: Path, tmp_path: Path, run_image: str
) -> None:
    cluster = unique("howto-docker")
    stack.client().create_cluster(
        cluster, nodes=1, executor="docker", container={"image": run_image, "memory_mib": 256}
    )
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    runs = run_the_notebook(cluster)
    try:
        check(runs, stack)
        for run in runs:
            assert run.get_details()["environmentUsed"]["image"].startswith("runyard-env:")
    finally:
        for run in runs:
            used = run.get_details()["environmentUsed"] or {}
            if used.get("image"):
                remove_image(used["image"])


def remove_image(image: str) -> None:
    """The images a test built go with it (others' stay)."""
    subprocess.run(["docker", "rmi", image], capture_output=True, check=False)
