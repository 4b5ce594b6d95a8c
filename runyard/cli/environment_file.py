"""``runyard submit --env-file``: an Environment as JSON or YAML.

The shape is the one ``Environment.to_dict()`` writes and a cluster's ``--environment``
takes: ``name``, ``version``, ``python`` (``user_managed_dependencies``,
``interpreter_path``, ``conda_dependencies``: the packages to build with, as ``to_dict``
writes them or as a conda environment file holds them; ``conda_dependencies_file``: a conda
environment file, relative to this one), ``docker`` (``enabled``, ``base_image``,
``base_dockerfile``, ``shm_size``), ``environment_variables``. A key Runyard does not know
is refused with its name rather than dropped, so a misspelt ``baseImage`` never quietly
sends a run without its image; a value of the wrong type (``enabled: "false"``,
``arguments: 5``) is refused naming its key rather than coerced into something the user did
not write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from runyard.core import Environment
from runyard.core.conda_dependencies import CondaDependencies
from runyard.errors import InvalidInput


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _string_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _anything(value: Any) -> bool:
    return True


# Each known setting with the values it takes, as words for the error: a value of another
# type is refused naming the key, never coerced (``"false"`` would be true, ``7`` for a
# string would become ``"7"`` but ``1.10`` would become ``"1.1"``).
Check = tuple[Callable[[Any], bool], str]
STRING: Check = (_string, "a string (quote it)")
BOOLEAN: Check = (_boolean, "true or false")
SECTIONS: dict[str, dict[str, Check]] = {
    "python": {
        "user_managed_dependencies": BOOLEAN,
        "interpreter_path": STRING,
        "conda_dependencies": (_anything, ""),  # checked key by key as it is read
        "conda_dependencies_file": STRING,
    },
    "docker": {
        "enabled": BOOLEAN,
        "base_image": STRING,
        "shm_size": STRING,
        "arguments": (_strings, "a list of strings"),
        "base_dockerfile": STRING,
    },
}
TOP: dict[str, Check] = {
    "name": STRING,
    "version": STRING,
    "environment_variables": (_string_mapping, "a mapping of strings (quote each)"),
}
KNOWN = ["name", "version", "python", "docker", "environment_variables"]


def load(path: str) -> Environment:
    """The Environment the file at ``path`` (as the user typed it) describes."""
    data = _parse(path, _read(path))
    if not isinstance(data, dict):
        raise InvalidInput(f"--env-file {path}: expected an object (name, python, docker, ...)")
    _check_keys(path, data)
    try:
        environment = Environment.from_dict(data)
        conda_file = (data.get("python") or {}).get("conda_dependencies_file")
        if conda_file:
            environment.python.conda_dependencies = _conda_file(path, data, conda_file)
            environment.python.conda_dependencies_file = None
    except InvalidInput as exc:
        raise type(exc)(f"--env-file {path}: {exc.message}") from None
    return environment


def _conda_file(path: str, data: dict[str, Any], conda_file: str) -> CondaDependencies:
    """The conda environment file an environment file names, relative to it."""
    if (data.get("python") or {}).get("conda_dependencies"):
        raise InvalidInput(
            "python.conda_dependencies and python.conda_dependencies_file: give one of them"
        )
    return CondaDependencies(str(Path(path).parent / conda_file))


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
    """Every key known and every value of its type (null: not set), else InvalidInput
    naming the first key that is not."""
    for key, value in data.items():
        if key not in KNOWN:
            raise InvalidInput(
                f"--env-file {path}: unknown key {key!r} (known: {', '.join(KNOWN)})"
            )
        if value is None:
            continue
        if key in TOP:
            _check_value(path, key, value, TOP[key])
            continue
        allowed = SECTIONS[key]
        if not isinstance(value, dict):
            raise InvalidInput(f"--env-file {path}: {key} must be an object")
        for inner, inner_value in value.items():
            if inner not in allowed:
                raise InvalidInput(
                    f"--env-file {path}: unknown key '{key}.{inner}' "
                    f"(known: {', '.join(sorted(allowed))})"
                )
            if inner_value is not None:
                _check_value(path, f"{key}.{inner}", inner_value, allowed[inner])


def _check_value(path: str, key: str, value: Any, check: Check) -> None:
    accepts, expected = check
    if not accepts(value):
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise InvalidInput(f"--env-file {path}: {key} must be {expected}, not {shown}")
