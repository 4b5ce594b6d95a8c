"""``Environment``: how a run's Python is provided, as ``azureml.core.Environment`` says it.

A run gets a user-managed Python (the worker's own, or ``interpreter_path``), a Docker
image (``docker.base_image``, or the cluster's), or an environment Runyard builds and
caches from its packages (``python.conda_dependencies``: ``from_pip_requirements``,
``from_conda_specification``, ``CondaDependencies.create``) and extra Dockerfile steps
(``docker.base_dockerfile``). Registered environments are versioned by the service
(``register``, ``get``, ``list``). What Runyard cannot do raises, naming the setting;
nothing is dropped silently.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from runyard.core import pip_requirements
from runyard.core.conda_dependencies import CondaDependencies
from runyard.errors import NotSupported

if TYPE_CHECKING:
    from runyard.core.workspace import Workspace

__all__ = ["CondaDependencies", "DockerSection", "Environment", "PythonSection"]

DEFAULT_INTERPRETER = "python"  # what Azure reports when none was set


class PythonSection:
    """``env.python``. An ``interpreter_path`` never set means: the worker's own Python on
    a cluster of host processes, ``python3`` (then ``python``) in an image.
    ``conda_dependencies`` starts empty (nothing to build), as a ``CondaDependencies`` to
    add packages to."""

    def __init__(self) -> None:
        self.user_managed_dependencies = False
        self.conda_dependencies: Any = CondaDependencies()
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

    def _conda_spec(self) -> Optional[Dict[str, Any]]:
        dependencies = self.conda_dependencies
        if dependencies is None:
            return None
        if not isinstance(dependencies, CondaDependencies):
            raise NotSupported(
                "python.conda_dependencies must be a CondaDependencies "
                "(runyard.core.conda_dependencies), not "
                f"{type(dependencies).__name__}"
            )
        return None if dependencies._is_empty() else dependencies._to_spec()


class DockerSection:
    """``env.docker``: the image a run uses (``enabled`` asks for a container), or the
    Dockerfile its environment is built from. ``base_image`` and ``base_dockerfile`` exclude
    each other, as in Azure: setting one clears the other, with a warning."""

    def __init__(self) -> None:
        self.enabled = False
        self._base_image: Optional[str] = None
        self._base_dockerfile: Optional[str] = None
        self.shm_size: Optional[str] = None
        self.arguments: List[str] = []
        self.gpu_support = False

    @property
    def base_image(self) -> Optional[str]:
        return self._base_image

    @base_image.setter
    def base_image(self, value: Optional[str]) -> None:
        if value and self._base_dockerfile:
            warnings.warn(
                "docker.base_image and docker.base_dockerfile exclude each other: "
                "base_dockerfile is cleared",
                stacklevel=2,
            )
            self._base_dockerfile = None
        self._base_image = value or None

    @property
    def base_dockerfile(self) -> Optional[str]:
        """The whole Dockerfile (its ``FROM`` names the base), built with no network."""
        return self._base_dockerfile

    @base_dockerfile.setter
    def base_dockerfile(self, value: Any) -> None:
        """A Dockerfile's text, an open file, or the path of a file (as Azure's)."""
        if hasattr(value, "read"):
            value = value.read()
        elif isinstance(value, (str, os.PathLike)) and value and _is_file(value):
            with open(value, encoding="utf-8") as file:
                value = file.read()
        if value and self._base_image:
            warnings.warn(
                "docker.base_dockerfile and docker.base_image exclude each other: "
                "base_image is cleared (the Dockerfile's FROM names the base)",
                stacklevel=2,
            )
            self._base_image = None
        self._base_dockerfile = value or None


def _is_file(value: Any) -> bool:
    try:
        return "\n" not in str(value) and os.path.isfile(value)
    except (OSError, ValueError):
        return False


class Environment:
    def __init__(self, name: str = "runyard-default") -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Environment name expected str, {type(name).__name__} found")
        self.name = name
        self.version: Optional[str] = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: Dict[str, str] = {}

    # --- made from files, as Azure's ------------------------------------------------------

    @staticmethod
    def from_pip_requirements(
        name: str, file_path: str, pip_version: Optional[str] = None
    ) -> Environment:
        """The packages a pip requirements file lists (``-r`` includes read relative to
        it); an option that points pip elsewhere (``--index-url``, ``-f``, ``-e``), a URL
        or a path is refused with its line. ``pip_version`` is kept as ``pip=X`` in the
        conda packages; the build installs with its own installer."""
        env = Environment(name)
        env.python.conda_dependencies.set_pip_requirements(pip_requirements.read_file(file_path))
        if pip_version:
            env.python.conda_dependencies.add_conda_package(f"pip={pip_version}")
        return env

    @staticmethod
    def from_conda_specification(name: str, file_path: str) -> Environment:
        """A conda environment file (``conda env export``): its Python version, conda
        packages, channels and ``pip:`` list. No Python version in it: the base's Python
        (Azure would pick 3.8)."""
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(conda_dependencies_file_path=file_path)
        return env

    @staticmethod
    def from_existing_conda_environment(name: str, conda_environment_name: str) -> Environment:
        raise NotSupported(
            f"from_existing_conda_environment({conda_environment_name!r}): Runyard does not "
            "read local conda installations; export it (conda env export --no-builds > "
            "environment.yml) and use Environment.from_conda_specification(name, "
            "'environment.yml')"
        )

    @staticmethod
    def from_docker_image(
        name: str,
        image: str,
        container_registry: Any = None,
        conda_specification: Optional[str] = None,
        pip_requirements: Optional[str] = None,
    ) -> Environment:
        if container_registry is not None:
            raise NotSupported(
                "container_registry: the worker host pulls images with its own Docker credentials"
            )
        env = Environment._from_dependencies(name, conda_specification, pip_requirements)
        env.docker.base_image = image
        return env

    @staticmethod
    def from_dockerfile(
        name: str,
        dockerfile: Any,
        conda_specification: Optional[str] = None,
        pip_requirements: Optional[str] = None,
    ) -> Environment:
        env = Environment._from_dependencies(name, conda_specification, pip_requirements)
        env.docker.base_dockerfile = dockerfile
        return env

    @staticmethod
    def _from_dependencies(
        name: str, conda_specification: Optional[str], pip_requirements: Optional[str]
    ) -> Environment:
        if conda_specification and pip_requirements:
            raise NotSupported("give conda_specification or pip_requirements, not both")
        if conda_specification:
            return Environment.from_conda_specification(name, conda_specification)
        if pip_requirements:
            return Environment.from_pip_requirements(name, pip_requirements)
        env = Environment(name)
        env.python.user_managed_dependencies = True  # the image's own Python, as Azure's
        return env

    def clone(self, new_name: str) -> Environment:
        env = Environment.from_dict({**self.to_dict(), "name": new_name})
        env.version = None
        return env

    # --- registered in the service ------------------------------------------------------

    def register(self, workspace: Workspace) -> Environment:
        """A new version when this differs from the latest one registered under the name
        (the latest itself when it does not); returns it, ``version`` set. Versions are
        numbered by the service: a ``version`` set here does not choose one."""
        spec = self.to_dict()
        spec.pop("version", None)
        return Environment._registered(workspace.client.register_environment(self.name, spec))

    @staticmethod
    def get(
        workspace: Workspace,
        name: str,
        version: Optional[str] = None,
        label: Optional[str] = None,
    ) -> Environment:
        """The latest registered version of ``name``, or ``version``."""
        if label is not None:
            raise NotSupported(f"label={label!r}: environments have versions, not labels")
        return Environment._registered(workspace.client.get_environment(name, version))

    @staticmethod
    def list(workspace: Workspace) -> Dict[str, Environment]:
        """The latest version of each registered environment, by name."""
        return {
            data["name"]: Environment._registered(data)
            for data in workspace.client.list_environments()
        }

    @staticmethod
    def _registered(data: Dict[str, Any]) -> Environment:
        env = Environment.from_dict(data["spec"])
        env.name = data["name"]
        env.version = str(data["version"])
        return env

    def build(self, workspace: Workspace, image_build_compute: Optional[str] = None) -> Any:
        """Build this environment ahead of any run, on ``image_build_compute`` (a cluster;
        none: the default one), with its build log."""
        from runyard.core import environment_builds

        return environment_builds.build(self, workspace, image_build_compute)

    def get_image_details(self, workspace: Workspace) -> Any:
        from runyard.core import environment_builds

        return environment_builds.image_details(self, workspace)

    # --- as a run carries it ------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """Only what was set (unset fields fall back to the cluster's default environment);
        raises ``NotSupported`` for a setting Runyard cannot honour."""
        self._refuse_unsupported()
        data: Dict[str, Any] = {"name": self.name}
        if self.version is not None:
            data["version"] = str(self.version)
        python: Dict[str, Any] = {}
        if self.python.user_managed_dependencies:
            python["user_managed_dependencies"] = True
        if self.python.interpreter_was_set:
            python["interpreter_path"] = self.python.interpreter_path
        conda = self.python._conda_spec()
        if conda is not None:
            python["conda_dependencies"] = conda
            # Packages named: the service builds them, whatever the cluster's default says.
            python["user_managed_dependencies"] = self.python.user_managed_dependencies
        docker: Dict[str, Any] = {}
        if self.docker.enabled:
            docker["enabled"] = True
        if self.docker.base_image:
            docker["base_image"] = self.docker.base_image
        if self.docker.base_dockerfile:
            docker["base_dockerfile"] = self.docker.base_dockerfile
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
        if self.python.conda_dependencies_file:
            raise NotSupported(
                f"environment {self.name!r} sets python.conda_dependencies_file (deprecated "
                "in Azure too): use Environment.from_conda_specification(name, path)"
            )
        if self.docker.arguments:
            raise NotSupported(
                f"environment {self.name!r} sets docker.arguments, which Runyard does not "
                "support: the cluster decides how containers run"
            )

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Environment:
        env = cls(data.get("name") or "runyard-default")
        if data.get("version") is not None:
            env.version = str(data["version"])
        python = data.get("python") or {}
        env.python.user_managed_dependencies = bool(python.get("user_managed_dependencies"))
        env.python.interpreter_path = python.get("interpreter_path")
        if python.get("conda_dependencies") is not None:
            env.python.conda_dependencies = CondaDependencies._from_spec(
                python["conda_dependencies"], "python.conda_dependencies"
            )
        env.python.conda_dependencies_file = python.get("conda_dependencies_file")
        docker = data.get("docker") or {}
        env.docker.enabled = bool(docker.get("enabled"))
        # Both kept as given (a file or the service may hold both): no setter's reset.
        env.docker._base_image = docker.get("base_image") or None
        env.docker._base_dockerfile = docker.get("base_dockerfile") or None
        env.docker.shm_size = docker.get("shm_size")
        env.docker.arguments = list(docker.get("arguments") or [])
        env.environment_variables = dict(data.get("environment_variables") or {})
        return env

    def __repr__(self) -> str:
        version = f", version={self.version!r}" if self.version is not None else ""
        return f"Environment(name={self.name!r}{version})"
