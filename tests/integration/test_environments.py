"""Registered environments through the real API, the SDK and the CLI: ``register`` makes a
new version only when the environment changed (Azure's rule), ``get`` and ``list`` read
them back as Environments, ``runyard env list / show`` show them, and what could never build
is refused with a 4xx and its reason. A run submitted with packages keeps them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from runyard.core.conda_dependencies import CondaDependencies
from runyard.errors import BadRequirement, NotFound
from tests.support.services import ADMIN, ADMIN_TOKEN, Stack, runyard, unique

API = "/api/v1"


def workspace(stack: Stack) -> Workspace:
    return Workspace(url=stack.url)


def sklearn_env(name: str, *pip: str) -> Environment:
    env = Environment(name=name)
    env.python.conda_dependencies = CondaDependencies.create(
        pip_packages=["azureml-defaults", "Scikit_Learn>=1.4", *pip],
        conda_packages=["numpy=1.26"],
        python_version="3.11",
    )
    return env


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(RUNYARD_URL=stack.url, RUNYARD_TOKEN=ADMIN_TOKEN)
    return subprocess.run(
        runyard(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_register_makes_a_new_version_only_when_the_environment_changed(stack: Stack) -> None:
    ws, name = workspace(stack), unique("sk")
    first = sklearn_env(name).register(workspace=ws)
    assert (first.name, first.version) == (name, "1")
    assert sklearn_env(name).register(ws).version == "1"  # the same: no new version
    changed = sklearn_env(name, "joblib==1.4.2").register(ws)
    assert changed.version == "2"
    assert list(changed.python.conda_dependencies.pip_packages) == [
        "Scikit_Learn>=1.4",
        "joblib==1.4.2",
    ]
    assert Environment.get(workspace=ws, name=name).version == "2"
    restored = Environment.get(workspace=ws, name=name, version="1")
    assert restored.to_dict() == {**sklearn_env(name).to_dict(), "version": "1"}
    listed = Environment.list(workspace=ws)
    assert listed[name].version == "2"
    versions = stack.client().environment_versions(name)
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["spec_hash"] != versions[1]["spec_hash"]
    assert versions[1]["requirements"] == ["numpy==1.26.*", "scikit-learn>=1.4"]


def test_the_same_packages_spelt_differently_are_no_new_version(stack: Stack) -> None:
    name = unique("spelt")
    client = stack.client()
    spec = {"python": {"conda_dependencies": {"pip_packages": ["numpy"]}}}
    assert client.register_environment(name, spec)["version"] == 1
    spelt = {
        "name": name,
        "version": "7",  # not a request: versions are numbered by the service
        "python": {"conda_dependencies": {"channels": [], "pip_packages": ["numpy"]}},
        "docker": {},
    }
    assert client.register_environment(name, spelt)["version"] == 1


def test_runyard_env_list_and_show(stack: Stack) -> None:
    ws, name = workspace(stack), unique("cli-env")
    sklearn_env(name).register(ws)
    sklearn_env(name, "joblib").register(ws)
    latest = stack.client().get_environment(name)
    listed = cli(stack, "env", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if name in line)
    assert [cell.strip() for cell in row.split("│")][:3] == [name, "2", latest["spec_hash"]]
    shown = cli(stack, "env", "show", name, "--version", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:2] == [f"name            {name}", "version         1"]
    assert "python_version  3.11" in lines
    requirements = lines[lines.index("requirements") + 1 : lines.index("spec")]
    assert requirements == ["  numpy==1.26.*", "  scikit-learn>=1.4"]
    as_json = json.loads(cli(stack, "env", "show", name, "--json").stdout)
    assert (as_json["version"], as_json["spec"]["version"]) == (2, "2")
    missing = cli(stack, "env", "show", name, "--version", "9")
    assert (missing.returncode, missing.stderr) == (
        3,
        f"error: environment '{name}' has no version 9 (latest: 2)\n",
    )


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"python": {"conda_dependencies": {"pip_packages": ["numpy>=>1"]}}}, 422,
         "pip package 'numpy>=>1' is not a valid requirement: Expected"),
        ({"python": {"conda_dependencies": {"pip_packages": ["x @ https://h/x.whl"]}}}, 422,
         "names a URL; packages come from the worker host's package index only"),
        ({"python": {"conda_dependencies": {"conda_packages": ["numpy=one"]}}}, 422,
         "conda package 'numpy=one': cannot read its version"),
        ({"python": {"conda_dependencies": {"python_version": "2.7"}}}, 422,
         "python_version"),
        ({"python": {"conda_dependencies": {"conda_packages": ["python<3.12"]}}}, 422,
         "conda package 'python<3.12': a range of Python versions cannot choose the "
         "interpreter; give one version, as python=3.11"),
        ({"python": {"conda_deps": {}}}, 422, "python.conda_deps"),
        ({"name": "other"}, 422, "is named 'other' but is registered as"),
    ],
)  # fmt: skip
def test_what_could_never_build_is_refused_with_its_reason(
    stack: Stack, body: dict, status: int, reason: str
) -> None:
    name = unique("bad-env")
    with httpx.Client(base_url=stack.url, headers=ADMIN, timeout=30) as http:
        response = http.post(f"{API}/environments/{name}", json=body)
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert reason in detail and "\n" not in detail, detail
        assert http.get(f"{API}/environments/{name}").status_code == 404  # nothing stored


def test_a_bad_name_and_a_missing_environment_say_why(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, headers=ADMIN, timeout=30) as http:
        bad = http.post(f"{API}/environments/-dash", json={})
        missing = http.get(f"{API}/environments/{unique('none')}/versions")
    assert bad.status_code == 422 and "environment names are" in bad.json()["detail"]
    assert missing.status_code == 404 and "is registered" in missing.json()["detail"]
    with pytest.raises(NotFound, match="no environment named 'nothing-here' is registered"):
        Environment.get(workspace(stack), "nothing-here")


def test_a_run_submitted_with_packages_keeps_them(stack: Stack, tmp_path: Path) -> None:
    """The API takes the environment a build needs; the worker builds it (not here)."""
    cluster = unique("envs")
    stack.client().create_cluster(cluster, nodes=1, executor="docker")  # Dockerfile steps
    (tmp_path / "train.py").write_text("import sklearn\n")
    (tmp_path / "requirements.txt").write_text("scikit-learn>=1.4\nazureml-defaults\n")
    env = Environment.from_pip_requirements(
        name="myenv", file_path=str(tmp_path / "requirements.txt")
    )
    env.docker.base_dockerfile = "FROM runyard-run-base:bookworm\nRUN true\n"
    config = ScriptRunConfig(
        source_directory=str(tmp_path), script="train.py", compute_target=cluster, environment=env
    )
    run = Experiment(workspace(stack), "envs").submit(config)
    stored = stack.client().get_run(run.id)["environment"]
    assert stored["python"]["conda_dependencies"]["pip_packages"] == ["scikit-learn>=1.4"]
    assert stored["docker"]["base_dockerfile"] == "FROM runyard-run-base:bookworm\nRUN true\n"
    stack.client().cancel(run.id)


def test_a_run_whose_packages_could_never_build_is_refused_at_submit(
    stack: Stack, tmp_path: Path
) -> None:
    """Before: accepted, to fail later; now a 422 naming the package, and no run."""
    cluster = unique("envs")
    stack.client().create_cluster(cluster, nodes=1)
    (tmp_path / "train.py").write_text("print(1)\n")
    env = Environment("unreadable")
    env.python.conda_dependencies.add_conda_package("numpy=one")
    config = ScriptRunConfig(
        source_directory=str(tmp_path), script="train.py", compute_target=cluster, environment=env
    )
    before = stack.client().count_runs(cluster=cluster)
    with pytest.raises(BadRequirement, match="conda package 'numpy=one': cannot read its version"):
        Experiment(workspace(stack), "envs").submit(config)
    assert stack.client().count_runs(cluster=cluster) == before
