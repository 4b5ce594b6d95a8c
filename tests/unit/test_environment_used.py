"""What the worker tells about the environment a run got (the contract's EnvironmentUsed),
sent with STARTING."""

from __future__ import annotations

from worker.environments.used import Built, environment_used

KEYS = {
    "name",
    "version",
    "hash",
    "spec_hash",
    "packages",
    "image",
    "venv",
    "cached",
    "build_seconds",
}


def test_a_built_environment_is_told_by_its_hashes_packages_and_place() -> None:
    built = Built(
        hash="a" * 32,
        spec_hash="b" * 32,
        packages=["tinypkg==1.0", "numpy==2.1.3"],
        image="runyard-env:" + "a" * 32,
        build_seconds=2.34567,
    )
    used = environment_used({"name": "tiny", "version": "3"}, built)
    assert set(used) == KEYS
    assert used == {
        "name": "tiny",
        "version": "3",
        "hash": "a" * 32,
        "spec_hash": "b" * 32,
        "packages": ["numpy==2.1.3", "tinypkg==1.0"],
        "image": "runyard-env:" + "a" * 32,
        "venv": None,
        "cached": False,
        "build_seconds": 2.346,
    }


def test_nothing_built_still_names_the_environment() -> None:
    used = environment_used({"name": "plain"}, None)
    assert set(used) == KEYS
    assert (used["name"], used["version"], used["hash"], used["packages"]) == (
        "plain",
        None,
        None,
        [],
    )
    assert used["cached"] is True
