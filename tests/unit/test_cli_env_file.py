"""``runyard submit --env-file``: the SDK's Environment shape, in JSON or YAML; nothing
misspelt is dropped on the way."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runyard.cli import environment_file
from runyard.core import Environment
from runyard.core.conda_dependencies import CondaDependencies
from runyard.errors import InvalidInput, NotSupported
from tests.support.services import runyard


def sdk_environment() -> Environment:
    env = Environment("train-env")
    env.docker.base_image = "runyard-run-base:bookworm"
    env.python.interpreter_path = "python3"
    env.environment_variables = {"SEED": "7"}
    return env


def test_the_sdks_own_serialisation_reads_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("env.json").write_text(json.dumps(sdk_environment().to_dict()))
    Path("env.yaml").write_text(
        "name: train-env\n"
        "docker:\n  base_image: runyard-run-base:bookworm\n"
        "python:\n  interpreter_path: python3\n"
        "environment_variables:\n  SEED: '7'\n"
    )
    for path in ("env.json", "env.yaml"):
        assert environment_file.load(path).to_dict() == sdk_environment().to_dict()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"docker": {"baseImage": "x"}}',
         "--env-file env.json: unknown key 'docker.baseImage' (known: arguments, base_dockerfile, "
         "base_image, enabled, shm_size)"),
        ('{"dockr": {}}', "--env-file env.json: unknown key 'dockr' (known: name, version, "
         "python, docker, environment_variables)"),
        ('["not", "an", "object"]', "--env-file env.json: expected an object"),
        ('{"docker": "img"}', "--env-file env.json: docker must be an object"),
        ("{not json", "--env-file env.json is not valid JSON: "),
    ],
)  # fmt: skip
def test_a_file_runyard_cannot_read_exactly_is_refused_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("env.json").write_text(text)
    with pytest.raises(InvalidInput) as caught:
        environment_file.load("env.json")
    assert caught.value.message.startswith(message), caught.value.message


def test_bad_yaml_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("env.yml").write_text("docker:\n  base_image: [unclosed\n")
    with pytest.raises(InvalidInput, match=r"^--env-file env.yml is not valid YAML at line \d"):
        environment_file.load("env.yml")


def test_a_missing_file_is_named_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match=r"^--env-file conf/nope.yaml does not exist$"):
        environment_file.load("conf/nope.yaml")


def test_settings_runyard_cannot_honour_are_refused_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("env.yaml").write_text("docker:\n  arguments: ['--privileged']\n")
    with pytest.raises(NotSupported, match=r"docker\.arguments"):
        environment_file.load("env.yaml").to_dict()


def test_conda_dependencies_are_read_as_to_dict_writes_them_or_as_a_conda_file_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before issue 15 every conda setting was refused; now they are what gets built."""
    monkeypatch.chdir(tmp_path)
    env = Environment("train-env")
    env.python.conda_dependencies = CondaDependencies.create(
        pip_packages=["scikit-learn>=1.4"], conda_packages=["numpy=1.26"], python_version="3.11"
    )
    Path("env.json").write_text(json.dumps(env.to_dict()))
    Path("env.yaml").write_text(
        "name: train-env\n"
        "python:\n"
        "  conda_dependencies:\n"
        "    dependencies: [python=3.11, numpy=1.26, {pip: [scikit-learn>=1.4]}]\n"
    )
    Path("conda.yml").write_text(
        "dependencies:\n- python=3.11\n- numpy=1.26\n- pip:\n  - scikit-learn>=1.4\n"
    )
    Path("by-file.yaml").write_text(
        "name: train-env\npython:\n  conda_dependencies_file: conda.yml\n"
    )
    for path in ("env.json", "env.yaml", "by-file.yaml"):
        assert environment_file.load(path).to_dict() == env.to_dict(), path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"python": {"conda_dependencies": {"pip": ["x"]}}}',
         "--env-file env.json: unknown key 'python.conda_dependencies.pip' (known: name, "
         "channels, conda_packages, pip_packages, python_version"),
        ('{"python": {"conda_dependencies": {"pip_packages": ["--index-url http://x"]}}}',
         "--env-file env.json: pip package: '--index-url http://x': pip options are not "
         "supported"),
        ('{"python": {"conda_dependencies": {"python_version": "2.7"}}}',
         "--env-file env.json: python version '2.7': give a Python 3 version"),
    ],
)  # fmt: skip
def test_bad_conda_dependencies_are_refused_naming_what(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("env.json").write_text(text)
    with pytest.raises(InvalidInput) as caught:
        environment_file.load("env.json")
    assert caught.value.message.startswith(message), caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"docker": {"arguments": 5}}', "docker.arguments must be a list of strings, not 5"),
        ('{"docker": {"arguments": "--ipc=host"}}',
         'docker.arguments must be a list of strings, not "--ipc=host"'),
        ('{"docker": {"arguments": ["-v", 3]}}',
         'docker.arguments must be a list of strings, not ["-v", 3]'),
        ('{"python": {"user_managed_dependencies": "no"}}',
         'python.user_managed_dependencies must be true or false, not "no"'),
        ('{"docker": {"enabled": "false"}}', 'docker.enabled must be true or false, not "false"'),
        ('{"docker": {"shm_size": []}}', "docker.shm_size must be a string (quote it), not []"),
        ('{"docker": {"base_image": 3}}', "docker.base_image must be a string (quote it), not 3"),
        ('{"python": {"interpreter_path": true}}',
         "python.interpreter_path must be a string (quote it), not true"),
        ('{"name": ["a"]}', 'name must be a string (quote it), not ["a"]'),
        ('{"version": 1.1}', "version must be a string (quote it), not 1.1"),
        ('{"environment_variables": {"SEED": 7}}',
         'environment_variables must be a mapping of strings (quote each), not {"SEED": 7}'),
        ('{"environment_variables": ["SEED=7"]}',
         'environment_variables must be a mapping of strings (quote each), not ["SEED=7"]'),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_one_line_naming_its_key_and_exit_2(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "env.json").write_text(text)
    env = {**os.environ, "RUNYARD_URL": "http://127.0.0.1:9", "RUNYARD_TOKEN": "ryt_x"}
    done = subprocess.run(
        runyard("submit", ".", "-s", "train.py", "--env-file", "env.json"),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (2, f"error: --env-file env.json: {message}\n")
