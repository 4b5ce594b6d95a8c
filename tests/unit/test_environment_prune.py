"""``runyard env prune`` on a worker host: environments no run holds go, least recently
used first; those in use stay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runyard.cli.main import app
from worker.environments.cache import MIB, EnvironmentCache


def cached_venv(cache: EnvironmentCache, build_hash: str, mib: int, last_use: float) -> None:
    (cache.venv(build_hash) / "bin").mkdir(parents=True)
    cache.write_record(build_hash, {"hash": build_hash, "kind": "venv", "size_bytes": mib * MIB})
    os.utime(cache.root / "records" / f"{build_hash}.json", (last_use, last_use))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EnvironmentCache:
    monkeypatch.setenv("RUNYARD_ENV_CACHE_DIR", str(tmp_path / "cache"))
    found = EnvironmentCache(tmp_path / "cache")
    cached_venv(found, "a" * 32, 3, last_use=100)
    cached_venv(found, "b" * 32, 3, last_use=200)
    cached_venv(found, "c" * 32, 3, last_use=300)
    return found


def test_prune_to_a_size_removes_the_least_recently_used(cache: EnvironmentCache) -> None:
    done = CliRunner().invoke(app, ["env", "prune", "--max-mib", "4"])
    assert done.exit_code == 0, done.output
    assert f"removed venv {'a' * 32} (3.0 MiB)" in done.output
    assert f"removed venv {'b' * 32} (3.0 MiB)" in done.output
    assert "2 environment(s) removed; 1 left, 3.0 MiB in" in done.output
    assert [p.name for p in (cache.root / "venvs").iterdir()] == ["c" * 32]


def test_prune_all_unused_keeps_what_a_run_holds(cache: EnvironmentCache) -> None:
    held = cache.pin("b" * 32)
    try:
        done = CliRunner().invoke(app, ["env", "prune", "--all-unused"])
    finally:
        held.release()
    assert done.exit_code == 0, done.output
    assert [p.name for p in (cache.root / "venvs").iterdir()] == ["b" * 32]


def test_a_negative_size_is_a_usage_error(cache: EnvironmentCache) -> None:
    done = CliRunner().invoke(app, ["env", "prune", "--max-mib", "-1"])
    assert done.exit_code == 2
    assert len(list((cache.root / "venvs").iterdir())) == 3
