"""``Environment``: how a run's Python is provided (user-managed here; Docker images later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PythonSection:
    user_managed_dependencies: bool = False
    interpreter_path: str = "python"
    conda_dependencies: Any = None


@dataclass
class DockerSection:
    enabled: bool = False
    base_image: str | None = None
    shm_size: str | None = None
    arguments: list[str] = field(default_factory=list)


class Environment:
    def __init__(self, name: str = "runyard-default") -> None:
        self.name = name
        self.version: str | None = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}

    def to_dict(self) -> dict[str, Any]:
        """Only what was set: unset fields fall back to the cluster's default environment."""
        data: dict[str, Any] = {"name": self.name}
        python: dict[str, Any] = {}
        if self.python.user_managed_dependencies:
            python["user_managed_dependencies"] = True
        if self.python.interpreter_path != "python" or self.python.user_managed_dependencies:
            python["interpreter_path"] = self.python.interpreter_path
        docker: dict[str, Any] = {}
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        env = cls(data.get("name", "runyard-default"))
        python = data.get("python") or {}
        env.python.user_managed_dependencies = bool(python.get("user_managed_dependencies"))
        env.python.interpreter_path = python.get("interpreter_path") or "python"
        docker = data.get("docker") or {}
        env.docker.enabled = bool(docker.get("enabled"))
        env.docker.base_image = docker.get("base_image")
        env.docker.shm_size = docker.get("shm_size")
        env.environment_variables = dict(data.get("environment_variables") or {})
        return env

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r})"
