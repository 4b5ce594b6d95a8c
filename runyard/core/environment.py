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
        python: dict[str, Any] = {
            "user_managed_dependencies": self.python.user_managed_dependencies
        }
        if self.python.user_managed_dependencies or self.python.interpreter_path != "python":
            python["interpreter_path"] = self.python.interpreter_path
        docker: dict[str, Any] = {"enabled": self.docker.enabled}
        if self.docker.base_image:
            docker["base_image"] = self.docker.base_image
        if self.docker.shm_size:
            docker["shm_size"] = self.docker.shm_size
        return {
            "name": self.name,
            "python": python,
            "docker": docker,
            "environment_variables": dict(self.environment_variables),
        }

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
