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
    Path("env.yaml").write_text("python:\n  conda_dependencies: {dependencies: [numpy]}\n")
    with pytest.raises(NotSupported, match=r"python\.conda_dependencies"):
        environment_file.load("env.yaml").to_dict()


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
