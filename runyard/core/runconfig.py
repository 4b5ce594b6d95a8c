"""``RunConfiguration`` and ``DockerConfiguration``, as ``azureml.core.runconfig`` has them.

A ``ScriptRunConfig`` always holds one (``src.run_config``); its ``environment`` and
``target`` are the very settings ``ScriptRunConfig.environment`` / ``compute_target`` set.
The attributes are fixed (``__slots__``): assigning one Runyard does not have raises, rather
than being ignored.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from runyard.core.environment import Environment
from runyard.errors import NotSupported

LOCAL = "local"  # Azure's target for "this machine": Runyard's default cluster
MAX_RUN_DURATION = 2_592_000  # Azure's default limit: 30 days


class DockerConfiguration:
    """``DockerConfiguration(use_docker=True)``: run in a container (the image is the
    environment's ``docker.base_image``, or the cluster's)."""

    __slots__ = ("arguments", "shared_volumes", "shm_size", "use_docker")

    def __init__(
        self,
        use_docker: Optional[bool] = None,
        shm_size: Optional[str] = None,
        shared_volumes: Optional[bool] = None,
        arguments: Optional[List[str]] = None,
    ) -> None:
        self.use_docker = use_docker
        self.shm_size = shm_size
        self.shared_volumes = shared_volumes
        self.arguments = list(arguments or [])


class RunConfiguration:
    __slots__ = (
        "_node_count",
        "arguments",
        "communicator",
        "docker",
        "environment",
        "environment_variables",
        "framework",
        "max_run_duration_seconds",
        "script",
        "target",
    )

    def __init__(
        self,
        script: Optional[str] = None,
        arguments: Optional[List[Any]] = None,
        framework: Optional[str] = None,
        communicator: Optional[str] = None,
        conda_dependencies: Any = None,
        **_azure_private: Any,
    ) -> None:
        for name in _azure_private:
            if not name.startswith("_"):  # Azure's own underscored plumbing only
                raise TypeError(f"RunConfiguration() got an unexpected keyword argument {name!r}")
        self.script = script
        self.arguments: List[Any] = list(arguments or [])
        self.framework = framework or "Python"
        self.communicator = communicator or "None"
        self.target: Any = LOCAL
        self.environment = Environment()
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies
        self.environment_variables: Dict[str, str] = {}
        self.max_run_duration_seconds: Optional[float] = None
        self.docker: Optional[DockerConfiguration] = None
        self._node_count = 1

    @property
    def node_count(self) -> int:
        return self._node_count

    @node_count.setter
    def node_count(self, value: int) -> None:
        if value != 1:
            raise NotSupported(
                f"node_count={value}: Runyard runs each run on one node; multi-node runs "
                "are not supported yet"
            )
        self._node_count = value

    def check(self) -> None:
        """What a submit cannot honour, refused before anything is sent."""
        if self.framework.lower() != "python":
            raise NotSupported(f"framework {self.framework!r}: Runyard runs Python scripts")
        if self.communicator not in ("None", None):
            raise NotSupported(
                f"communicator {self.communicator!r}: distributed runs are not supported yet"
            )
        if self.docker is not None:
            if self.docker.arguments:
                raise NotSupported(
                    "DockerConfiguration.arguments: the cluster decides how containers run"
                )
            if self.docker.shared_volumes is False:
                raise NotSupported("DockerConfiguration.shared_volumes=False is not supported")
        if self.max_run_duration_seconds is not None and not self.max_run_duration_seconds > 0:
            raise NotSupported("max_run_duration_seconds must be more than 0")

    def environment_spec(self) -> Dict[str, Any]:
        """The environment as the service takes it, with this configuration's additions."""
        spec = self.environment.to_dict()
        if self.docker is not None:
            docker = dict(spec.get("docker") or {})
            if self.docker.use_docker:
                docker["enabled"] = True
            elif self.docker.use_docker is False:
                docker["enabled"] = False
            if self.docker.shm_size:
                docker["shm_size"] = self.docker.shm_size
            spec["docker"] = docker
        if self.environment_variables:
            variables = dict(spec.get("environment_variables") or {})
            variables.update({str(k): str(v) for k, v in self.environment_variables.items()})
            spec["environment_variables"] = variables
        return spec

    def __repr__(self) -> str:
        return f"RunConfiguration(script={self.script!r}, target={self.target!r})"
