"""``CondaDependencies``, as ``azureml.core.conda_dependencies`` has it: the packages and the
Python version an environment is built with.

No conda runs anywhere: Runyard builds a venv (or an image) from the worker host's package
index, ``conda_packages`` translated into pip requirements and ``python=X.Y`` choosing the
interpreter (``protocol.build_specs``). What would point a build at another index is
refused (``pip_indexurl``, pip options); Azure's own SDK packages (``azureml-defaults``...),
which AML scripts list, are left out: every run gets Runyard's SDK.

Read and written as a conda environment file (YAML, through PyYAML, imported only when a
file is read or written: ``runyard.core`` is imported inside runs that have the standard
library only), and carried by a run as the ``CondaSpec`` JSON (``_to_spec``/``_from_spec``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterator, List, Optional

from runyard.core import pip_requirements
from runyard.core.spec_files import read_text
from runyard.errors import BadRequirement, InvalidInput, NotSupported

CHANNELS = "channels"
PACKAGES = "dependencies"
PIP = "pip"
PYTHON = "python"
# What a conda environment file may hold (Azure's list); ``prefix`` is where conda put the
# environment on the machine that exported it, meaningless anywhere else.
FILE_KEYS = ("name", "channels", "dependencies", "prefix", "variables")
SPEC_KEYS = ("name", "channels", "conda_packages", "pip_packages", "python_version")
PYTHON_VERSION = re.compile(r"^3(\.[0-9]+){0,2}$")
_CONDA_NAME = re.compile(r"^\s*(?:[^:\s]+::)?([A-Za-z0-9_.\-]+)")
# ``=3.11``, ``==3.11.4``, ``3.11`` (conda's bare version), maybe ``.*`` and a build string.
_PYTHON_EXACT = re.compile(
    r"^(?:==?)?\s*(3(?:\.[0-9]+){0,2})(?:\.?\*)?(?:(?:=|\s+)[A-Za-z0-9_.*]+)?$"
)
_PYTHON_RANGE = re.compile(r"[<>!~,|]")

NO_INDEX = (
    "packages come from the worker host's package index (its pip configuration), which "
    "serves every build"
)


def python_version_of(spec: str, version: str) -> Optional[str]:
    """The interpreter a conda ``python`` spec chooses (``version`` is what follows the
    name): ``python=3.11``, ``python==3.11.4`` or ``python 3.11`` name one; a bare
    ``python`` names none. A range (``python>=3.8``, ``python<3.12``) is refused: a build
    uses one interpreter, and reading a bound as the version would choose the wrong one."""
    text = version.strip()
    if not text:
        return None
    if _PYTHON_RANGE.search(text):
        raise BadRequirement(
            f"conda package {spec!r}: a range of Python versions cannot choose the "
            "interpreter; give one version, as python=3.11"
        )
    found = _PYTHON_EXACT.match(text)
    if found is None:
        raise BadRequirement(f"conda package {spec!r}: cannot read the Python version")
    return found.group(1)


def _conda_name(spec: str) -> Optional[str]:
    found = _CONDA_NAME.match(spec)
    return pip_requirements.canonical_name(found.group(1)) if found else None


class CondaDependencies:
    """The packages of an environment: conda packages, pip packages, channels and the
    Python version. Made empty (Azure's starts with ``azureml-defaults`` and Python 3.8:
    here the SDK comes with Runyard, and the Python is the image's or worker's unless set)."""

    def __init__(
        self,
        conda_dependencies_file_path: Optional[str] = None,
        _underlying_structure: Optional[Dict[str, Any]] = None,
    ) -> None:
        self._name: Optional[str] = None
        self._channels: List[str] = []
        self._conda: List[str] = []
        self._pip: List[str] = []
        self._python_version: Optional[str] = None
        if conda_dependencies_file_path:
            path = str(conda_dependencies_file_path)
            self._load(_read_yaml(path), where=path, folder=os.path.dirname(path))
        elif _underlying_structure is not None:
            self._load(_underlying_structure, where="conda dependencies", folder=None)

    # --- making one ----------------------------------------------------------------------

    @staticmethod
    def create(
        pip_indexurl: Optional[str] = None,
        pip_packages: Optional[List[str]] = None,
        conda_packages: Optional[List[str]] = None,
        python_version: Optional[str] = None,
        pin_sdk_version: bool = True,
    ) -> CondaDependencies:
        """These packages (``pin_sdk_version`` pins Azure's SDK packages, which Runyard
        leaves out, so it changes nothing). No ``python_version``: the base's Python."""
        if pip_indexurl:
            raise NotSupported(f"pip_indexurl={pip_indexurl!r}: {NO_INDEX}")
        dependencies = CondaDependencies()
        if python_version:
            dependencies.set_python_version(python_version)
        for package in pip_packages or []:
            dependencies.add_pip_package(package)
        for package in conda_packages or []:
            dependencies.add_conda_package(package)
        return dependencies

    def _load(self, structure: Any, where: str, folder: Optional[str]) -> None:
        """A conda environment file's content (``name``, ``channels``, ``dependencies``
        with a ``pip:`` list); ``-r FILE`` in that list is read relative to ``folder``."""
        if not isinstance(structure, dict):
            raise InvalidInput(f"{where}: not a conda environment (expected a mapping)")
        for key in structure:
            if str(key) not in FILE_KEYS:
                raise InvalidInput(
                    f"{where}: unknown key {key!r} in a conda environment "
                    f"(known: {', '.join(FILE_KEYS)})"
                )
        if structure.get("variables"):
            raise NotSupported(
                f"{where}: 'variables' are not supported in a conda environment here; set "
                "env.environment_variables instead"
            )
        name = structure.get("name")
        self._name = None if name is None else str(name)
        for channel in _strings(structure.get(CHANNELS), f"{where}: channels"):
            self.add_channel(channel)
        dependencies = structure.get(PACKAGES) or []
        if not isinstance(dependencies, list):
            raise InvalidInput(f"{where}: dependencies must be a list")
        for item in dependencies:
            if isinstance(item, dict) and set(item) == {PIP}:
                for line in _strings(item[PIP], f"{where}: pip"):
                    self._add_pip_line(line.strip(), where, folder)
            elif isinstance(item, (str, int, float)):
                self.add_conda_package(str(item))
            else:
                raise InvalidInput(
                    f"{where}: dependency {json.dumps(item, default=str)} is neither a conda "
                    "package nor a 'pip:' list"
                )

    def _add_pip_line(self, line: str, where: str, folder: Optional[str]) -> None:
        included = None
        for option in ("-r ", "--requirement ", "--requirement="):
            if line.startswith(option):
                included = line[len(option) :].strip()
        if included is not None and folder is not None:
            for requirement in pip_requirements.read_file(os.path.join(folder, included)):
                self.add_pip_package(requirement)
        else:
            self._check_pip(line, f"{where}: pip")
            self.add_pip_package(line)

    # --- Python -------------------------------------------------------------------------

    def get_python_version(self) -> Optional[str]:
        return self._python_version

    def set_python_version(self, version: str) -> None:
        """``"3.11"`` (or ``"3"``, ``"3.11.4"``): the interpreter the build must use."""
        text = str(version).strip()
        if not PYTHON_VERSION.match(text):
            raise InvalidInput(
                f"python version {text!r}: give a Python 3 version such as '3.11' or '3.11.4'"
            )
        self._python_version = text

    # --- channels -----------------------------------------------------------------------

    @property
    def conda_channels(self) -> Iterator[str]:
        """A copy: changing it changes nothing here."""
        return iter(list(self._channels))

    def add_channel(self, channel: str) -> None:
        """Kept with the environment; packages still come from the worker host's index."""
        if channel not in self._channels:
            self._channels.append(str(channel))

    def remove_channel(self, channel: str) -> None:
        if channel in self._channels:
            self._channels.remove(channel)

    # --- conda packages -----------------------------------------------------------------

    @property
    def conda_packages(self) -> Iterator[str]:
        """As Azure lists them: ``python=X`` first when a version is set. A copy."""
        python = [f"{PYTHON}={self._python_version}"] if self._python_version else []
        return iter(python + self._conda)

    def add_conda_package(self, conda_package: str) -> None:
        """``numpy=1.26``, ``scipy>=1.10``; ``python=3.11`` sets the Python version."""
        spec = str(conda_package).strip()
        name = _conda_name(spec)
        if name is None:
            raise InvalidInput(f"conda package {spec!r} is not a conda match spec")
        if name == PYTHON:
            found = _CONDA_NAME.match(spec)
            assert found is not None  # it gave the name
            version = python_version_of(spec, spec[found.end() :])
            if version:
                self.set_python_version(version)
            return
        if pip_requirements.is_sdk_package(name):
            return
        if spec not in self._conda:
            self._conda.append(spec)

    def remove_conda_package(self, conda_package: str) -> None:
        if _conda_name(conda_package) == PYTHON:
            raise InvalidInput("python must not be removed from conda dependencies")
        if conda_package in self._conda:
            self._conda.remove(conda_package)

    # --- pip packages -------------------------------------------------------------------

    @property
    def pip_packages(self) -> Iterator[str]:
        """A copy: changing it changes nothing here."""
        return iter(list(self._pip))

    @property
    def pip_options(self) -> Iterator[str]:
        """Always empty: pip options are refused."""
        return iter([])

    def add_pip_package(self, pip_package: str) -> None:
        """Replaces an earlier requirement of the same package (as Azure's does). Azure's
        SDK packages (``azureml-*``) are left out: Runyard gives every run its own SDK."""
        text = self._check_pip(pip_package, "pip package")
        if pip_requirements.is_sdk_package(text):
            return
        self.remove_pip_package(text)
        self._pip.append(text)

    def remove_pip_package(self, pip_package: str) -> None:
        """Every requirement of that package, whatever its version."""
        name = pip_requirements.name_of(pip_package)
        self._pip = [p for p in self._pip if pip_requirements.name_of(p) != name]

    def set_pip_requirements(self, pip_requirements_list: List[str]) -> None:
        """The whole pip list at once (``Environment.from_pip_requirements``)."""
        checked = [self._check_pip(p, "pip package") for p in pip_requirements_list]
        self._pip = []
        for requirement in checked:
            self.add_pip_package(requirement)

    def set_pip_option(self, pip_option: str) -> None:
        raise NotSupported(f"pip option {pip_option!r}: {NO_INDEX}")

    def set_pip_index_url(self, index_url: str) -> None:
        raise NotSupported(f"pip index URL {index_url!r}: {NO_INDEX}")

    def remove_pip_option(self, pip_option: str) -> None:
        """Nothing to remove: no pip option is ever set."""

    @staticmethod
    def _check_pip(pip_package: str, where: str) -> str:
        return pip_requirements.check(pip_package, where)

    # --- as a file ----------------------------------------------------------------------

    def as_dict(self) -> Dict[str, Any]:
        """The conda environment file's content."""
        structure: Dict[str, Any] = {}
        if self._name:
            structure["name"] = self._name
        if self._channels:
            structure[CHANNELS] = list(self._channels)
        dependencies: List[Any] = list(self.conda_packages)
        if self._pip:
            dependencies.append({PIP: list(self._pip)})
        structure[PACKAGES] = dependencies
        return structure

    def serialize_to_string(self) -> str:
        """The conda environment file (YAML) these dependencies make."""
        return _dump_yaml(self.as_dict())

    def save(self, path: Optional[str] = None) -> str:
        """Written as a conda environment file at ``path``; returns the path."""
        if not path or os.path.isdir(path):
            raise InvalidInput(
                "Cannot save a conda environment specification file to a directory: give "
                "the file's path with its name"
            )
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            raise InvalidInput(f"Cannot save the conda environment file: no folder {parent}")
        with open(path, "w", encoding="utf-8") as file:
            file.write(self.serialize_to_string())
        return path

    # --- as a run carries it (protocol.environments.CondaSpec) --------------------------

    def _is_empty(self) -> bool:
        return not (self._channels or self._conda or self._pip or self._python_version)

    def _to_spec(self) -> Dict[str, Any]:
        spec: Dict[str, Any] = {}
        if self._name:
            spec["name"] = self._name
        spec["channels"] = list(self._channels)
        spec["conda_packages"] = list(self._conda)
        spec["pip_packages"] = list(self._pip)
        if self._python_version:
            spec["python_version"] = self._python_version
        return spec

    @classmethod
    def _from_spec(cls, spec: Any, where: str = "conda_dependencies") -> CondaDependencies:
        """From the JSON a run carries, or from a conda file's content (``dependencies``)."""
        if isinstance(spec, dict) and PACKAGES in spec:
            return cls(_underlying_structure=spec)
        if not isinstance(spec, dict):
            raise InvalidInput(f"{where} must be a mapping ({', '.join(SPEC_KEYS)})")
        for key in spec:
            if key not in SPEC_KEYS:
                raise InvalidInput(
                    f"unknown key '{where}.{key}' (known: {', '.join(SPEC_KEYS)}, or a conda "
                    "file's name, channels and dependencies)"
                )
        dependencies = cls()
        if spec.get("name") is not None:
            dependencies._name = str(spec["name"])
        if spec.get("python_version") is not None:
            dependencies.set_python_version(str(spec["python_version"]))
        for channel in _strings(spec.get("channels"), f"{where}.channels"):
            dependencies.add_channel(channel)
        for package in _strings(spec.get("conda_packages"), f"{where}.conda_packages"):
            dependencies.add_conda_package(package)
        for package in _strings(spec.get("pip_packages"), f"{where}.pip_packages"):
            dependencies.add_pip_package(package)
        return dependencies

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CondaDependencies) and self._to_spec() == other._to_spec()

    def __repr__(self) -> str:
        return f"CondaDependencies({json.dumps(self._to_spec())})"


def _strings(value: Any, where: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise InvalidInput(f"{where} must be a list of strings")
    return [str(v) for v in value]


def _read_yaml(path: str) -> Any:
    text = read_text(path, f"conda environment file {path}")
    try:
        import yaml
    except ImportError:  # a run's own Python may lack PyYAML: JSON is YAML too
        try:
            return json.loads(text)
        except ValueError:
            raise InvalidInput(f"{path}: reading a conda YAML file needs PyYAML") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise InvalidInput(f"{path} is not valid YAML{at}: {problem}") from None


def _dump_yaml(structure: Dict[str, Any]) -> str:
    try:
        import yaml
    except ImportError:  # JSON is YAML too
        return json.dumps(structure, indent=2) + "\n"
    return yaml.safe_dump(structure, sort_keys=False, default_flow_style=False)
