"""What may import what (docs/architecture.md, "Packages"): a worker and the protocol it
speaks load no database code, and the run-side SDK loads none of the service. Each check
runs in a fresh interpreter where the forbidden modules cannot be imported at all, so a
lazy import inside a function that the import of the package runs fails here too."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

DATABASE = ("sqlmodel", "sqlalchemy", "alembic", "psycopg", "store")
SERVICE = (*DATABASE, "protocol", "scheduler", "api", "worker", "celery", "redis", "fastapi")

BLOCKER = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} must not be imported here")
        return None

sys.meta_path.insert(0, Blocked())
import {module}
print("ok")
"""


def import_with_blocked(module: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=set(blocked), module=module)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("module", ["worker.app", "protocol.settings", "protocol.streams"])
def test_a_worker_and_its_protocol_load_no_database_module(module: str) -> None:
    result = import_with_blocked(module, DATABASE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_api_loads_neither_the_scheduler_nor_the_worker() -> None:
    result = import_with_blocked("api.app", ("scheduler", "worker", "celery"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["runyard.core", "runyard.tracking.sinks"])
def test_the_run_side_sdk_loads_nothing_of_the_service(module: str) -> None:
    result = import_with_blocked(module, SERVICE)
    assert result.returncode == 0, result.stderr


def test_the_check_itself_catches_a_forbidden_import() -> None:
    """Without this, a blocker that never fires would pass every test above."""
    result = import_with_blocked("scheduler.service", DATABASE)
    assert result.returncode != 0
    assert "must not be imported here" in result.stderr


def test_the_run_side_sdk_builds_an_environment_spec_without_pyyaml_or_packaging() -> None:
    """A run's own Python may have the standard library only: PyYAML is loaded only when a
    conda file is read or written, and requirements are parsed by the service."""
    blocked = {*SERVICE, "yaml", "packaging"}
    code = BLOCKER.format(blocked=blocked, module="runyard.core") + textwrap.dedent(
        """
        from runyard.core import Environment
        from runyard.core.conda_dependencies import CondaDependencies
        env = Environment("e")
        env.python.conda_dependencies = CondaDependencies.create(pip_packages=["numpy"])
        assert env.to_dict()["python"]["conda_dependencies"]["pip_packages"] == ["numpy"]
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
