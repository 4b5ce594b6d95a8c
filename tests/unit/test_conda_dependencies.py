"""``CondaDependencies`` and the ``Environment`` factories, as AML v1 code calls them (the
how-to "Create and manage reusable environments", imports changed): what a script writes
becomes the packages the run carries; what no Runyard build could honour is refused with
one line that names it."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest

import runyard.core
from runyard.core import Environment, RunConfiguration
from runyard.core.conda_dependencies import CondaDependencies
from runyard.core.environment import CondaDependencies as ThroughEnvironment
from runyard.errors import BadRequirement, InvalidInput, NotSupported


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


def conda_spec(env: Environment) -> dict:
    return env.to_dict()["python"]["conda_dependencies"]


def test_the_how_tos_conda_dependencies_become_the_runs_packages() -> None:
    myenv = Environment(name="myenv")
    conda_dep = CondaDependencies()
    conda_dep.add_conda_package("numpy==1.17.0")
    conda_dep.add_pip_package("pillow")
    myenv.python.conda_dependencies = conda_dep
    assert myenv.to_dict() == {
        "name": "myenv",
        "python": {
            # Packages named: built, even on a cluster whose default Python is user-managed.
            "user_managed_dependencies": False,
            "conda_dependencies": {
                "channels": [],
                "conda_packages": ["numpy==1.17.0"],
                "pip_packages": ["pillow"],
            },
        },
    }
    assert ThroughEnvironment is CondaDependencies  # azureml.core.environment has it too


def test_create_takes_pip_and_conda_packages_and_a_python_version() -> None:
    dependencies = CondaDependencies.create(
        pip_packages=["azureml-defaults", "scikit-learn>=1.4", "joblib"],
        conda_packages=["numpy=1.26", "python=3.10"],
        python_version="3.11",
    )
    assert list(dependencies.pip_packages) == ["scikit-learn>=1.4", "joblib"]
    assert list(dependencies.conda_packages) == ["python=3.10", "numpy=1.26"]
    assert dependencies.get_python_version() == "3.10"  # the conda package's, added last


@pytest.mark.parametrize(
    ("spec", "version"),
    [("python=3.11", "3.11"), ("python==3.11.4", "3.11.4"), ("python 3.10", "3.10"),
     ("conda-forge::python=3.12.*", "3.12"), ("python=3.11.4=h955ad1f_0", "3.11.4")],
)  # fmt: skip
def test_one_python_version_in_conda_packages_sets_it(spec: str, version: str) -> None:
    dependencies = CondaDependencies()
    dependencies.add_conda_package(spec)
    assert dependencies.get_python_version() == version


def test_azure_sdk_packages_are_left_out_as_runyard_gives_every_run_its_sdk() -> None:
    dependencies = CondaDependencies.create(pip_packages=["azureml-defaults", "azureml-core"])
    dependencies.add_pip_package("azureml-mlflow==1.50")
    assert list(dependencies.pip_packages) == []
    env = Environment("only-sdk")
    env.python.conda_dependencies = dependencies
    assert "python" not in env.to_dict()  # nothing to build: the cluster's default applies


def test_adding_a_package_again_replaces_its_earlier_requirement() -> None:
    dependencies = CondaDependencies()
    dependencies.add_pip_package("pandas==2.1")
    dependencies.add_pip_package("numpy")
    dependencies.add_pip_package("Pandas>=2.2")
    assert list(dependencies.pip_packages) == ["numpy", "Pandas>=2.2"]
    dependencies.remove_pip_package("pandas")
    dependencies.add_conda_package("scipy")
    dependencies.remove_conda_package("scipy")
    dependencies.add_channel("conda-forge")
    dependencies.add_channel("conda-forge")
    assert (list(dependencies.pip_packages), list(dependencies.conda_packages)) == (["numpy"], [])
    assert list(dependencies.conda_channels) == ["conda-forge"]


def test_yaml_round_trip_through_a_file(tmp_path: Path) -> None:
    dependencies = CondaDependencies.create(
        pip_packages=["scikit-learn>=1.4"], conda_packages=["numpy=1.26"], python_version="3.11"
    )
    dependencies.add_channel("conda-forge")
    path = dependencies.save(str(tmp_path / "environment.yml"))
    assert Path(path).read_text() == dependencies.serialize_to_string()
    assert dependencies.serialize_to_string() == textwrap.dedent(
        """\
        channels:
        - conda-forge
        dependencies:
        - python=3.11
        - numpy=1.26
        - pip:
          - scikit-learn>=1.4
        """
    )
    assert CondaDependencies(conda_dependencies_file_path=path) == dependencies
    assert CondaDependencies(_underlying_structure=dependencies.as_dict()) == dependencies


def test_a_conda_env_export_file_is_read_with_its_pip_list_and_includes(tmp_path: Path) -> None:
    write(tmp_path / "conda/more.txt", "requests==2.31  # pinned\n")
    path = write(
        tmp_path / "conda/environment.yml",
        """
        name: project_environment
        channels:
          - conda-forge
        dependencies:
          - python=3.11.4
          - conda-forge::numpy=1.26
          - pip
          - pip:
            - scikit-learn>=1.4
            - -r more.txt
        prefix: /home/someone/miniconda3/envs/project_environment
        """,
    )
    env = Environment.from_conda_specification(name="from-conda", file_path=path)
    assert conda_spec(env) == {
        "name": "project_environment",
        "channels": ["conda-forge"],
        "conda_packages": ["conda-forge::numpy=1.26", "pip"],
        "pip_packages": ["scikit-learn>=1.4", "requests==2.31"],
        "python_version": "3.11.4",
    }


def test_from_pip_requirements_reads_includes_comments_and_continuations(tmp_path: Path) -> None:
    write(tmp_path / "base.txt", "numpy>=1.26\n")
    path = write(
        tmp_path / "requirements.txt",
        """
        # training
        -r base.txt

        scikit-learn>=1.4 ; python_version >= "3.9"  # the model
        pandas==2.2.* \\
            ; sys_platform == "linux"
        azureml-defaults
        """,
    )
    env = Environment.from_pip_requirements(name="myenv", file_path=path)
    assert conda_spec(env)["pip_packages"] == [
        "numpy>=1.26",
        'scikit-learn>=1.4 ; python_version >= "3.9"',
        'pandas==2.2.*     ; sys_platform == "linux"',
    ]


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("--index-url https://mirror.example/simple", NotSupported,
         "requirements.txt line 2: '--index-url https://mirror.example/simple': pip options "
         "are not supported; packages come from the worker host's package index"),
        ("-f ./wheels", NotSupported, "requirements.txt line 2: '-f ./wheels': pip options"),
        ("-e .", NotSupported, "requirements.txt line 2: '-e .': pip options are not supported"),
        ("numpy==2.0 --hash=sha256:abc", NotSupported,
         "requirements.txt line 2: 'numpy==2.0 --hash=sha256:abc': per-requirement options"),
        ("./vendor/pkg", BadRequirement,
         "requirements.txt line 2: './vendor/pkg' is a URL or a path; packages come from"),
        ("pkg @ https://example.org/pkg-1.0.tar.gz", BadRequirement,
         "requirements.txt line 2: 'pkg @ https://example.org/pkg-1.0.tar.gz' is a URL"),
        ("https://example.org/pkg-1.0-py3-none-any.whl", BadRequirement,
         "requirements.txt line 2: 'https://example.org/pkg-1.0-py3-none-any.whl' is a URL"),
        ("-r missing.txt", InvalidInput, "requirements file missing.txt does not exist"),
    ],
)  # fmt: skip
def test_a_requirements_line_no_build_could_honour_is_refused_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, error: type, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("requirements.txt").write_text(f"numpy\n{line}\n")
    with pytest.raises(error) as caught:
        Environment.from_pip_requirements("myenv", "requirements.txt")
    assert caught.value.message.startswith(message), caught.value.message
    assert "\n" not in caught.value.message


def test_a_requirements_file_that_includes_itself_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "-r b.txt\n")
    write(tmp_path / "b.txt", "--requirement=a.txt\n")
    with pytest.raises(InvalidInput, match="includes itself"):
        Environment.from_pip_requirements("loop", str(tmp_path / "a.txt"))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: CondaDependencies.create(pip_indexurl="https://mirror/simple"), NotSupported,
         "pip_indexurl='https://mirror/simple': packages come from the worker host's package "
         "index"),
        (lambda: CondaDependencies().set_pip_option("--extra-index-url https://x"), NotSupported,
         "pip option '--extra-index-url https://x': packages come from"),
        (lambda: CondaDependencies().add_pip_package("--pre"), NotSupported,
         "pip package: '--pre': pip options are not supported"),
        (lambda: CondaDependencies().add_pip_package("git+https://github.com/a/b"),
         BadRequirement, "pip package: 'git+https://github.com/a/b' is a URL or a path"),
        (lambda: CondaDependencies().set_python_version("2.7"), InvalidInput,
         "python version '2.7': give a Python 3 version"),
        (lambda: CondaDependencies().add_conda_package("python<3.12"), BadRequirement,
         "conda package 'python<3.12': a range of Python versions cannot choose the "
         "interpreter; give one version, as python=3.11"),
        (lambda: CondaDependencies.create(conda_packages=["python>=3.8"]), BadRequirement,
         "conda package 'python>=3.8': a range of Python versions cannot choose"),
        (lambda: CondaDependencies.create(python_version="3.11").remove_conda_package(
            "python=3.11"), InvalidInput, "python must not be removed"),
        (lambda: Environment.from_existing_conda_environment("myenv", "base"), NotSupported,
         "from_existing_conda_environment('base'): Runyard does not read local conda"),
        (lambda: Environment.get(None, "myenv", label="latest"), NotSupported,  # type: ignore[arg-type]
         "label='latest': environments have versions, not labels"),
    ],
)  # fmt: skip
def test_what_no_build_could_honour_is_refused_naming_it(
    call: object, error: type, message: str
) -> None:
    with pytest.raises(error) as caught:
        call()  # type: ignore[operator]
    assert caught.value.message.startswith(message), caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dependencies: [numpy]\nsecrets: 1\n", "unknown key 'secrets' in a conda environment"),
        ("variables: {SEED: '1'}\n", "'variables' are not supported"),
        ("dependencies: [{conda: [numpy]}]\n", "is neither a conda package nor a 'pip:' list"),
        ("dependencies:\n- pip:\n  - --index-url https://x\n", "pip: '--index-url https://x'"),
        ("dependencies: [numpy\n", "is not valid YAML at line"),
    ],
)
def test_a_conda_file_runyard_cannot_read_exactly_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "environment.yml", text)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("(", r"\(")):
        Environment.from_conda_specification("bad", path)


def test_a_docker_base_dockerfile_is_text_a_file_or_its_path_and_excludes_base_image(
    tmp_path: Path,
) -> None:
    dockerfile = "FROM runyard-run-base:bookworm\nRUN echo hello\n"
    path = write(tmp_path / "Dockerfile", dockerfile)
    env = Environment("docker")
    env.docker.base_image = "python:3.11"
    with pytest.warns(UserWarning, match="base_image is cleared"):
        env.docker.base_dockerfile = path
    assert env.to_dict()["docker"] == {"base_dockerfile": dockerfile}
    with open(path) as file:
        env.docker.base_dockerfile = file
    assert env.docker.base_dockerfile == dockerfile
    assert Environment.from_dockerfile("d", dockerfile).to_dict() == {
        "name": "d",
        "python": {"user_managed_dependencies": True},
        "docker": {"base_dockerfile": dockerfile},
    }


def test_to_dict_and_from_dict_round_trip_every_setting(tmp_path: Path) -> None:
    env = Environment.from_pip_requirements(
        "full", write(tmp_path / "requirements.txt", "numpy>=1.26\n"), pip_version="24.0"
    )
    env.version = "3"
    env.python.conda_dependencies.set_python_version("3.11")
    env.docker.base_dockerfile = "FROM python:3.11-slim\n"
    env.environment_variables = {"SEED": "7"}
    data = env.to_dict()
    assert data["python"]["conda_dependencies"]["conda_packages"] == ["pip=24.0"]
    assert Environment.from_dict(data).to_dict() == data
    expected = {k: v for k, v in data.items() if k != "version"}
    assert env.clone("copy").to_dict() == {**expected, "name": "copy"}


def test_a_conda_dependencies_file_setting_is_refused_for_the_azure_replacement() -> None:
    env = Environment("old")
    env.python.conda_dependencies_file = "conda_dependencies.yml"
    with pytest.raises(NotSupported, match=r"use Environment\.from_conda_specification"):
        env.to_dict()


def test_run_configuration_takes_conda_dependencies_as_azures_does() -> None:
    dependencies = CondaDependencies.create(pip_packages=["numpy"])
    spec = RunConfiguration(conda_dependencies=dependencies).environment_spec()
    assert spec["python"]["conda_dependencies"]["pip_packages"] == ["numpy"]


def test_build_and_get_image_details_are_the_environment_builds_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``runyard.core.environment_builds`` builds (its own tests drive a real one): the
    Environment hands it itself, the workspace and the compute as given."""
    calls: list[tuple] = []
    fake = types.ModuleType("runyard.core.environment_builds")
    fake.build = lambda *args: calls.append(("build", *args)) or "build details"  # type: ignore[attr-defined]
    fake.image_details = lambda *args: calls.append(("details", *args)) or {"image": "x"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "runyard.core.environment_builds", fake)
    monkeypatch.setattr(runyard.core, "environment_builds", fake, raising=False)
    env, ws = Environment("built"), object()
    assert env.build(ws, image_build_compute="cpu") == "build details"
    assert env.get_image_details(ws) == {"image": "x"}
    assert calls == [("build", env, ws, "cpu"), ("details", env, ws)]
