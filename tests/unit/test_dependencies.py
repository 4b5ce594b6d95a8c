"""What ``pip install runyard`` brings is what the SDK and the service import: httpx is the
notebook widget's and the tests' (the SDK speaks HTTP through the standard library)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.unit.test_package_boundaries import import_with_blocked

PROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


@pytest.mark.parametrize(
    "module", ["runyard.core", "runyard.client", "runyard.cli.main", "runyard.widgets"]
)
def test_the_sdk_and_the_cli_import_without_httpx(module: str) -> None:
    result = import_with_blocked(module, ("httpx", "httpx_sse"))
    assert result.returncode == 0, result.stderr


def test_httpx_comes_with_the_notebook_extra_and_the_tests_not_the_base_install() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert "httpx" not in names(PROJECT["project"]["dependencies"])
    assert {"httpx", "httpx-sse"} <= names(extras["notebook"])  # runyard/widgets/feed.py
    assert "httpx" in names(extras["test"])
