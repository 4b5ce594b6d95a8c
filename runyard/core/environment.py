"""``Environment``: how a run's Python is provided, as ``azureml.core.Environment`` says it.

Runyard runs a user-managed Python (the worker's own, or ``interpreter_path``) or a Docker
image (``docker.base_image``, or the cluster's image). What Runyard cannot do yet (build a
conda or pip environment, extra Dockerfile steps) raises at submit, naming the setting;
nothing is dropped silently.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from runyard.errors import NotSupported

DEFAULT_INTERPRETER = "python"  # what Azure reports when none was set


class PythonSection:
    """``env.python``. An ``interpreter_path`` never set means: the worker's own Python on
    a cluster of host processes, ``python3`` (then ``python``) in an image."""

    def __init__(self) -> None:
        self.user_managed_dependencies = False
        self.conda_dependencies: Any = None
        self.conda_dependencies_file: Optional[str] = None
        self._interpreter_path: Optional[str] = None

    @property
    def interpreter_path(self) -> str:
        return self._interpreter_path or DEFAULT_INTERPRETER

    @interpreter_path.setter
    def interpreter_path(self, value: Optional[str]) -> None:
        self._interpreter_path = value or None

    @property
    def interpreter_was_set(self) -> bool:
        return self._interpreter_path is not None


class DockerSection:
    """``env.docker``: the image a run uses (``enabled`` asks for a container)."""

    def __init__(self) -> None:
        self.enabled = False
        self.base_image: Optional[str] = None
        self.shm_size: Optional[str] = None
        self.arguments: List[str] = []
        self.base_dockerfile: Optional[str] = None
        self.gpu_support = False


class Environment:
    def __init__(self, name: str = "runyard-default") -> None:
        self.name = name
        self.version: Optional[str] = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: Dict[str, str] = {}

    def to_dict(self) -> Dict[str, Any]:
        """Only what was set (unset fields fall back to the cluster's default environment);
        raises ``NotSupported`` for a setting Runyard cannot honour."""
        self._refuse_unsupported()
        data: Dict[str, Any] = {"name": self.name}
        python: Dict[str, Any] = {}
        if self.python.user_managed_dependencies:
            python["user_managed_dependencies"] = True
        if self.python.interpreter_was_set:
            python["interpreter_path"] = self.python.interpreter_path
        docker: Dict[str, Any] = {}
        if self.docker.enabled:
            docker["enabled"] = True
        if self.docker.base_image:
            docker["base_image"] = self.docker.base_image
        if self.docker.shm_size:
            docker["shm_size"] = self.docker.shm_size
        for key, section in (("python", python), ("docker", docker)):
            if section:
                data[key] = section
        if self.environment_variables:
            data["environment_variables"] = {
                str(k): str(v) for k, v in self.environment_variables.items()
            }
        return data

    def _refuse_unsupported(self) -> None:
        unsupported = {
            "python.conda_dependencies": self.python.conda_dependencies is not None,
            "python.conda_dependencies_file": bool(self.python.conda_dependencies_file),
            "docker.base_dockerfile": bool(self.docker.base_dockerfile),
            "docker.arguments": bool(self.docker.arguments),
        }
        named = [name for name, used in unsupported.items() if used]
        if named:
            raise NotSupported(
                f"environment {self.name!r} sets {', '.join(named)}, which Runyard does not "
                "support yet (it does not build environments, and the cluster decides how "
                "containers run): use an image that has the packages (docker.base_image) "
                "or a user-managed Python (python.user_managed_dependencies = True)"
            )

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Environment:
        env = cls(data.get("name", "runyard-default"))
        python = data.get("python") or {}
        env.python.user_managed_dependencies = bool(python.get("user_managed_dependencies"))
        env.python.interpreter_path = python.get("interpreter_path")
        docker = data.get("docker") or {}
        env.docker.enabled = bool(docker.get("enabled"))
        env.docker.base_image = docker.get("base_image")
        env.docker.shm_size = docker.get("shm_size")
        env.environment_variables = dict(data.get("environment_variables") or {})
        return env

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r})"
