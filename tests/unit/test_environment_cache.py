"""The worker's cache of built environments: least recently used go first past the size
limit, and never one a run holds; an installer's failure in plain words."""

from __future__ import annotations

import os
from pathlib import Path

from protocol.build_specs import build_spec
from worker.environments.cache import MIB, EnvironmentCache
from worker.environments.failures import installer_failure


def cached_venv(cache: EnvironmentCache, build_hash: str, mib: int, last_use: float) -> None:
    venv = cache.venv(build_hash)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    record = {"hash": build_hash, "kind": "venv", "size_bytes": mib * MIB, "packages": []}
    cache.write_record(build_hash, record)
    record_file = cache.root / "records" / f"{build_hash}.json"
    os.utime(record_file, (last_use, last_use))


def test_least_recently_used_go_first_and_pinned_ones_stay(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "cache")
    cached_venv(cache, "a" * 32, 4, last_use=100)  # oldest, but a run holds it
    cached_venv(cache, "b" * 32, 4, last_use=200)
    cached_venv(cache, "c" * 32, 4, last_use=300)
    cached_venv(cache, "d" * 32, 4, last_use=400)
    held = cache.pin("a" * 32)
    gone = cache.evict(9 * MIB, {"venv": cache.remove_venv})
    assert [g.hash for g in gone] == ["b" * 32, "c" * 32]
    assert sorted(p.name for p in (cache.root / "venvs").iterdir()) == ["a" * 32, "d" * 32]
    assert cache.record("b" * 32) is None
    held.release()
    assert [g.hash for g in cache.evict(0, {"venv": cache.remove_venv})] == ["a" * 32, "d" * 32]


def test_all_unused_removes_every_environment_no_run_holds(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "cache")
    cached_venv(cache, "a" * 32, 1, last_use=100)
    cached_venv(cache, "b" * 32, 1, last_use=200)
    held = cache.pin("b" * 32)
    gone = cache.evict(None, {"venv": cache.remove_venv}, all_unused=True)
    assert [g.hash for g in gone] == ["a" * 32]
    held.release()


def test_a_hit_marks_the_environment_used_now(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "cache")
    cached_venv(cache, "a" * 32, 4, last_use=100)
    cached_venv(cache, "b" * 32, 4, last_use=200)
    cache.used("a" * 32)
    assert [g.hash for g in cache.evict(4 * MIB, {"venv": cache.remove_venv})] == ["b" * 32]


def test_a_kind_this_host_cannot_remove_is_left_alone(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "cache")
    cache.write_record("i" * 32, {"hash": "i" * 32, "kind": "image", "size_bytes": 9 * MIB})
    assert cache.evict(0, {"venv": cache.remove_venv}) == []
    assert cache.record("i" * 32) is not None


TARGET = "Python 3.11 on x86_64-manylinux_2_36"
UV_NOT_FOUND = [
    "error: No solution found when resolving dependencies",
    "  cause: Because nosuchpkg was not found in the package registry and you require "
    "nosuchpkg, we can conclude that your requirements are unsatisfiable.",
]


def test_a_missing_package_and_a_conda_only_one_are_told_apart() -> None:
    pip = build_spec({"python": {"conda_dependencies": {"pip_packages": ["nosuchpkg"]}}})
    conda = build_spec({"python": {"conda_dependencies": {"conda_packages": ["nosuchpkg=1"]}}})
    assert pip is not None and conda is not None
    assert installer_failure(pip, UV_NOT_FOUND, TARGET).startswith(
        "environment build failed: package 'nosuchpkg' was not found in the worker's "
        "package index (installer: error: No solution found"
    )
    assert installer_failure(conda, UV_NOT_FOUND, TARGET).startswith(
        "environment build failed: conda package 'nosuchpkg' is not on the package index, "
        "and this worker has no conda channel"
    )


def test_a_package_with_no_wheel_is_named_with_why_no_source_is_built() -> None:
    spec = build_spec({"python": {"conda_dependencies": {"pip_packages": ["SrcOnly"]}}})
    assert spec is not None
    tail = [
        "error: No solution found when resolving dependencies",
        "  cause: Because srconly==1.0 has no usable wheels and you require srconly, we can "
        "conclude that your requirements are unsatisfiable.",
        "hint: Wheels are required for `srconly` because building from source is disabled "
        "for all packages (i.e., with `--no-build`)",
    ]
    assert installer_failure(spec, tail, TARGET).startswith(
        "environment build failed: package 'srconly' has no wheel for Python 3.11 on "
        "x86_64-manylinux_2_36 in the worker's package index; Runyard installs wheels only: "
        "building from source would run the package's code on the worker host (installer: "
    )


def test_an_unknown_failure_gives_the_installers_own_last_lines() -> None:
    spec = build_spec({"python": {"conda_dependencies": {"pip_packages": ["x"]}}})
    assert spec is not None
    tail = ["error: Failed to fetch: `https://mirror/x`", "  timeout"]
    reason = installer_failure(spec, tail, TARGET)
    assert reason == (
        "environment build failed (installer: error: Failed to fetch: `https://mirror/x` | timeout)"
    )
