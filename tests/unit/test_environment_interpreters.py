"""The interpreter a local venv is built from is run by the worker (its version asked)
with the installers' settings, never the worker's own secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.environments import venvs


def test_asking_an_interpreters_version_gives_it_none_of_the_workers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_TOKEN", "the-workers-token")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://:password@broker")
    seen = tmp_path / "seen"
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\nenv > {seen}\necho 3.11.9\n")
    python.chmod(0o755)
    assert venvs._version_of(str(python), python.stat().st_mtime) == "3.11.9"
    environment = seen.read_text()
    assert "the-workers-token" not in environment
    assert "password@broker" not in environment
