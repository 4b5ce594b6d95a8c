"""``ScriptRunConfig``: what to run (folder, entry script, arguments) and where.

Every setting lives on its ``run_config`` (a ``RunConfiguration``), as in Azure:
``src.environment`` and ``src.run_config.environment`` are one setting, and so are
``compute_target`` and ``run_config.target``.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence

from runyard.core.environment import Environment
from runyard.core.runconfig import DockerConfiguration, RunConfiguration
from runyard.errors import NotSupported


class ScriptRunConfig:
    def __init__(
        self,
        source_directory: "str | os.PathLike[str]" = ".",
        script: Optional[str] = None,
        arguments: Optional[Sequence[Any]] = None,
        run_config: Optional[RunConfiguration] = None,
        _telemetry_values: Any = None,
        compute_target: Any = None,
        environment: Optional[Environment] = None,
        distributed_job_config: Any = None,
        resume_from: Any = None,
        max_run_duration_seconds: Optional[float] = None,
        command: Any = None,
        docker_runtime_config: Optional[DockerConfiguration] = None,
        *,
        priority: int = 0,
        team: Optional[str] = None,
        preemptible: bool = True,
    ) -> None:
        unsupported = {
            "distributed_job_config": distributed_job_config is not None,
            "resume_from": resume_from is not None,
            "command": command is not None,
        }
        named = [name for name, used in unsupported.items() if used]
        if named:
            raise NotSupported(
                f"ScriptRunConfig({', '.join(named)}=...) is not supported: give a script "
                "(and arguments); runs use one node"
            )
        self.source_directory = os.fspath(source_directory)
        self.run_config = run_config if run_config is not None else RunConfiguration()
        if script is not None:
            self.run_config.script = script
        if arguments is not None:
            self.run_config.arguments = list(arguments)
        if compute_target is not None:
            self.run_config.target = compute_target
        if environment is not None:
            self.run_config.environment = environment
        if max_run_duration_seconds is not None:
            self.run_config.max_run_duration_seconds = max_run_duration_seconds
        if docker_runtime_config is not None:
            self.run_config.docker = docker_runtime_config
        self.priority = priority  # a Runyard extension: higher starts first on its cluster
        # Runyard extensions: the team charged (none: the token's default team), and
        # whether the run may be preempted (False: never, but only within its team's quota).
        self.team = team
        self.preemptible = preemptible

    @property
    def script(self) -> Optional[str]:
        return self.run_config.script

    @script.setter
    def script(self, value: Optional[str]) -> None:
        self.run_config.script = value

    @property
    def arguments(self) -> List[Any]:
        return self.run_config.arguments

    @arguments.setter
    def arguments(self, value: Sequence[Any]) -> None:
        self.run_config.arguments = list(value or [])

    @property
    def environment(self) -> Environment:
        return self.run_config.environment

    @environment.setter
    def environment(self, value: Environment) -> None:
        self.run_config.environment = value

    @property
    def compute_target(self) -> Any:
        return self.run_config.target

    @compute_target.setter
    def compute_target(self, value: Any) -> None:
        self.run_config.target = value

    @property
    def max_run_duration_seconds(self) -> Optional[float]:
        return self.run_config.max_run_duration_seconds

    @max_run_duration_seconds.setter
    def max_run_duration_seconds(self, value: Optional[float]) -> None:
        self.run_config.max_run_duration_seconds = value

    @property
    def cluster(self) -> Optional[str]:
        """The cluster name. None, and Azure's "local" unless a cluster has that name, go to
        the service's default cluster."""
        target = self.run_config.target
        if isinstance(target, dict):
            target = target.get("name")
        elif target is not None and not isinstance(target, str):
            target = getattr(target, "name", None)
        return target or None

    def __repr__(self) -> str:
        return (
            f"ScriptRunConfig(source_directory={self.source_directory!r}, "
            f"script={self.script!r}, compute_target={self.compute_target!r})"
        )
