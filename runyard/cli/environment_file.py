"""``runyard submit --env-file``: an Environment as JSON or YAML.

The shape is the one ``Environment.to_dict()`` writes and a cluster's ``--environment``
takes: ``name``, ``version``, ``python`` (``user_managed_dependencies``,
``interpreter_path``), ``docker`` (``enabled``, ``base_image``, ``shm_size``),
``environment_variables``. A key Runyard does not know is refused with its name rather than
dropped, so a misspelt ``baseImage`` never quietly sends a run without its image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runyard.core import Environment
from runyard.errors import InvalidInput

KNOWN: dict[str, set[str] | None] = {
    "name": None,
    "version": None,
    "python": {
        "user_managed_dependencies",
        "interpreter_path",
        "conda_dependencies",
        "conda_dependencies_file",
    },
    "docker": {"enabled", "base_image", "shm_size", "arguments", "base_dockerfile"},
    "environment_variables": None,
}


def load(path: str) -> Environment:
    """The Environment the file at ``path`` (as the user typed it) describes."""
    data = _parse(path, _read(path))
    if not isinstance(data, dict):
        raise InvalidInput(f"--env-file {path}: expected an object (name, python, docker, ...)")
    _check_keys(path, data)
    environment = Environment.from_dict(data)
    # from_dict keeps what Runyard acts on; these are refused at submit, not dropped.
    python, docker = data.get("python") or {}, data.get("docker") or {}
    environment.python.conda_dependencies = python.get("conda_dependencies")
    environment.python.conda_dependencies_file = python.get("conda_dependencies_file")
    environment.docker.arguments = list(docker.get("arguments") or [])
    environment.docker.base_dockerfile = docker.get("base_dockerfile")
    if data.get("version") is not None:
        environment.version = str(data["version"])
    return environment


def _read(path: str) -> str:
    file = Path(path)
    if not file.exists():
        raise InvalidInput(f"--env-file {path} does not exist", field="env_file")
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidInput(f"--env-file {path}: cannot read it: {reason}") from None


def _parse(path: str, text: str) -> Any:
    if Path(path).suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"--env-file {path} is not valid JSON: {exc}") from None
    try:
        import yaml  # JSON is YAML too, so one parser reads both
    except ImportError:  # pragma: no cover - PyYAML comes with the service's dependencies
        try:
            return json.loads(text)
        except ValueError:
            raise InvalidInput(
                f"--env-file {path}: YAML needs PyYAML (pip install pyyaml)"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise InvalidInput(f"--env-file {path} is not valid YAML{at}: {problem}") from None


def _check_keys(path: str, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in KNOWN:
            raise InvalidInput(
                f"--env-file {path}: unknown key {key!r} (known: {', '.join(KNOWN)})"
            )
        allowed = KNOWN[key]
        if allowed is None or value is None:
            continue
        if not isinstance(value, dict):
            raise InvalidInput(f"--env-file {path}: {key} must be an object")
        for inner in value:
            if inner not in allowed:
                raise InvalidInput(
                    f"--env-file {path}: unknown key '{key}.{inner}' "
                    f"(known: {', '.join(sorted(allowed))})"
                )
    variables = data.get("environment_variables")
    if variables is not None and not isinstance(variables, dict):
        raise InvalidInput(f"--env-file {path}: environment_variables must be an object")
