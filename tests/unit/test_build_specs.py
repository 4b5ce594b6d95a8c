"""What an environment build is made of: conda specs as pip requirements, and the content
hash that names a build (never the environment's name)."""

from __future__ import annotations

import pytest

from protocol import dockerfiles
from protocol.build_specs import build_spec, conda_requirement, matches_python
from runyard.errors import BadRequirement


def env(pip: list[str] | None = None, conda: list[str] | None = None, **more: object) -> dict:
    return {
        "name": more.pop("name", "e"),
        "python": {
            "conda_dependencies": {
                "pip_packages": pip or [],
                "conda_packages": conda or [],
                **more,
            }
        },
    }


@pytest.mark.parametrize(
    ("spec", "requirement"),
    [
        ("numpy", "numpy"),
        ("numpy=1.26", "numpy==1.26.*"),  # conda's "=" is "any 1.26.x"
        ("numpy==1.26.4", "numpy==1.26.4"),
        ("numpy 1.26.4 py311_0", "numpy==1.26.4"),  # a build string means nothing to pip
        ("numpy=1.26.4=py311_0", "numpy==1.26.4"),
        ("conda-forge::scikit-learn>=1.4", "scikit-learn>=1.4"),
        ("scipy>=1.10,<2", "scipy<2,>=1.10"),
        ("Pillow=10.*", "pillow==10.*"),
    ],
)
def test_conda_specs_become_pip_requirements(spec: str, requirement: str) -> None:
    assert conda_requirement(spec) == requirement


@pytest.mark.parametrize("spec", ["numpy=latest", "numpy=abc", "::"])
def test_a_conda_spec_that_cannot_be_read_is_refused(spec: str) -> None:
    with pytest.raises(BadRequirement):
        conda_requirement(spec)


def test_python_and_pip_in_conda_packages_choose_the_interpreter_not_packages() -> None:
    spec = build_spec(env(conda=["python=3.11", "pip", "numpy=1.26"]))
    assert spec is not None
    assert spec.python_version == "3.11"
    assert spec.requirements == ("numpy==1.26.*",)
    assert spec.from_conda == ("numpy",)


def test_the_same_packages_under_another_name_and_order_hash_the_same() -> None:
    one = build_spec(env(["Scikit_Learn>=1.4", "numpy"], name="a"))
    two = build_spec(env(["numpy", "scikit-learn >= 1.4"], name="b"))
    assert one is not None and two is not None
    assert one.digest() == two.digest()
    assert one.build_digest("docker:sha256:1") == two.build_digest("docker:sha256:1")


def test_one_package_or_the_base_changes_the_hash() -> None:
    one = build_spec(env(["numpy", "pandas"]))
    two = build_spec(env(["numpy", "pandas==2.2"]))
    assert one is not None and two is not None
    assert one.digest() != two.digest()
    assert one.build_digest("docker:sha256:1") != one.build_digest("docker:sha256:2")


def test_nothing_to_build_for_a_user_managed_or_empty_environment() -> None:
    managed = env(["numpy"])
    managed["python"]["user_managed_dependencies"] = True
    assert build_spec(managed) is None
    assert build_spec(env()) is None
    assert build_spec({"name": "plain"}) is None


@pytest.mark.parametrize(
    "text",
    ["numpy; import os", "$(touch /tmp/x)", "../../etc/passwd", "pkg @ https://evil/x.whl"],
)
def test_a_requirement_that_is_no_plain_package_is_refused(text: str) -> None:
    with pytest.raises(BadRequirement):
        build_spec(env([text]))


@pytest.mark.parametrize(
    ("wanted", "actual", "matches"),
    [
        (None, (3, 11, 2), True),
        ("3", (3, 11, 2), True),
        ("3.11", (3, 11, 2), True),
        ("3.11.2", (3, 11, 2), True),
        ("3.12", (3, 11, 2), False),
        ("3.11.4", (3, 11, 2), False),
    ],
)
def test_a_python_version_matches_each_part_given(
    wanted: str | None, actual: tuple[int, ...], matches: bool
) -> None:
    assert matches_python(wanted, actual) is matches


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        ("python=3.11", "3.11"),
        ("python==3.11.4", "3.11.4"),
        ("python 3.11", "3.11"),
        ("python=3.11.*", "3.11"),
        ("python=3.11.4=h955ad1f_0", "3.11.4"),  # a build string chooses nothing here
        ("conda-forge::python=3.10", "3.10"),
    ],
)
def test_one_python_version_chooses_the_interpreter(spec: str, version: str) -> None:
    built = build_spec(env(conda=[spec]))
    assert built is not None and built.python_version == version


@pytest.mark.parametrize(
    "spec", ["python<3.12", "python>=3.8", "python>=3.8,<3.12", "python~=3.10"]
)
def test_a_python_version_range_is_refused_not_read_as_its_bound(spec: str) -> None:
    """Before: ``python<3.12`` asked for exactly 3.12, ``python>=3.8`` for 3.8."""
    with pytest.raises(BadRequirement) as refused:
        build_spec(env(conda=[spec]))
    assert str(refused.value) == (
        f"conda package {spec!r}: a range of Python versions cannot choose the interpreter; "
        "give one version, as python=3.11"
    )


# --- what a base_dockerfile may do -----------------------------------------------------------


def docker_env(dockerfile: str) -> dict:
    return {"name": "e", "docker": {"base_dockerfile": dockerfile}}


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM a\nADD http://127.0.0.1:8000/x /x\n",
         "base_dockerfile line 2: ADD http://127.0.0.1:8000/x: builds have no network and fetch "
         "nothing; copy files in with the snapshot, or name Python packages as packages"),
        ("FROM a\nadd --chown=1 HTTPS://h/x /x\n", "line 2: ADD HTTPS://h/x: builds have no"),
        ('FROM a\nADD ["ftp://h/x", "/x"]\n', "line 2: ADD ftp://h/x: builds have no network"),
        ("FROM a\nADD \\\n  http://h/x /x\n", "line 2: ADD http://h/x: builds"),
        ("FROM a\nADD git@github.com:o/r.git /r\n", "ADD git@github.com:o/r.git: builds"),
        ("FROM a\nADD https://github.com/o/r.git#main /r\n", "ADD https://github.com/o/r.git"),
        ("FROM a\nENV U=http://h/x\nADD $U /x\n", "line 3: ADD $U: builds have no network"),
        ("FROM a\nONBUILD ADD http://h/x /x\n", "line 2: ADD http://h/x: builds"),
        ("# syntax=docker/dockerfile:1\nFROM a\n",
         "base_dockerfile: parser directive '# syntax=docker/dockerfile:1' is not allowed"),
        ("#escape=`\nFROM a\nADD `\n http://h/x /x\n", "parser directive '# escape=`'"),
        ("ARG IMAGE=evil\nFROM ${IMAGE}\n", "line 2: FROM ${IMAGE}: name the image, not a"),
        ("FROM --platform=linux/arm64 a\n", "line 1: FROM --platform: builds use the worker's"),
        ("FROM a\nCOPY --from=$I /x /x\n", "line 2: COPY --from=$I: name a stage or image"),
        ("FROM a\nONBUILD COPY --from=b /x /x\n", "line 2: ONBUILD COPY --from=b: the image"),
    ],
)  # fmt: skip
def test_a_base_dockerfile_that_would_make_the_engine_fetch_is_refused(
    dockerfile: str, message: str
) -> None:
    """``network none`` cuts off the build's containers, not the engine: it would fetch an
    ADD URL or an image a variable names itself (seen: ADD of a local URL printed it)."""
    with pytest.raises(BadRequirement) as refused:
        build_spec(docker_env(dockerfile))
    assert message in str(refused.value) and "\n" not in str(refused.value), refused.value


def test_a_base_dockerfile_that_copies_and_runs_is_accepted() -> None:
    text = (
        "# a comment\nFROM a AS tools\nRUN mkdir /t\nFROM b\nCOPY --from=tools /t /t\n"
        "ADD local.tar.gz /opt/\nRUN echo http://not-fetched\n# escape=` (only a comment here)\n"
    )
    spec = build_spec(docker_env(text))
    assert spec is not None and spec.dockerfile == text


@pytest.mark.parametrize(
    ("dockerfile", "images", "final"),
    [
        ("FROM a\n", ["a"], "a"),
        ("FROM a AS one\nFROM b\nCOPY --from=one /x /x\nCOPY --from=c:1 /y /y\n",
         ["a", "b", "c:1"], "b"),
        ("FROM a AS base\nFROM base AS two\nFROM two\nCOPY --from=0 /x /x\n", ["a"], "a"),
        ("FROM scratch\nCOPY x /x\n", [], None),
        ("from A as One\nFROM one\n", ["A"], "A"),
    ],
)  # fmt: skip
def test_the_images_a_base_dockerfile_stands_on_are_named_not_its_stages(
    dockerfile: str, images: list[str], final: str | None
) -> None:
    assert dockerfiles.images(dockerfile) == images
    assert dockerfiles.final_base(dockerfile) == final


def test_an_image_whose_onbuild_steps_would_fetch_cannot_be_built_on() -> None:
    dockerfiles.check_triggers(["RUN mkdir /x", "COPY . /app"])
    with pytest.raises(BadRequirement) as refused:
        dockerfiles.check_triggers(["RUN true", "ADD http://h/x /x"])
    assert str(refused.value).startswith("its ONBUILD step: ADD http://h/x: builds have no")
