"""Environments and container policies as they travel: submitted with a run, laid over
its cluster's default, handed to the worker in its assignment. Plain pydantic, no database."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as Check

from protocol.build_specs import build_spec


class Executor(StrEnum):
    """Where a run's process runs: named by a cluster, its run's assignment and a worker."""

    LOCAL = "local"  # a process on the worker's host
    DOCKER = "docker"  # a container


EXECUTORS = tuple(Executor)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


REQUIREMENT_LENGTH = 512
MAX_PACKAGES = 500
PACKAGE_LIST = Check(default_factory=list, max_length=MAX_PACKAGES)


class CondaSpec(_Strict):
    """``CondaDependencies`` as JSON. No conda runs anywhere: ``python_version`` picks the
    interpreter, ``pip_packages`` and the ``conda_packages`` (translated to requirements,
    ``build_spec``) are installed from the worker host's package index."""

    name: str | None = Check(default=None, max_length=255)
    channels: list[str] = Check(default_factory=list, max_length=32)
    conda_packages: list[str] = PACKAGE_LIST  # conda match specs: "numpy=1.26", "scipy>=1.10"
    pip_packages: list[str] = PACKAGE_LIST  # PEP 508 requirements
    python_version: str | None = Check(default=None, pattern=r"^3(\.[0-9]+){0,2}$")


class PythonSpec(_Strict):
    user_managed_dependencies: bool | None = None
    interpreter_path: str | None = Check(default=None, min_length=1, max_length=1024)
    conda_dependencies: CondaSpec | None = None


class DockerSpec(_Strict):
    enabled: bool | None = None
    base_image: str | None = Check(default=None, min_length=1, max_length=512)
    shm_size: str | None = Check(default=None, pattern=r"^[0-9]+[bkmgBKMG]?$")
    arguments: list[str] | None = None
    # Extra build steps: a whole Dockerfile (its FROM names the base), built with no network.
    base_dockerfile: str | None = Check(default=None, min_length=1, max_length=64 * 1024)


class EnvironmentSpec(_Strict):
    """An ``azureml.core.Environment`` as JSON. Only what is given is kept, so a run's
    environment can be laid over its cluster's default one."""

    name: str | None = Check(default=None, max_length=255)
    version: str | None = Check(default=None, max_length=64)
    python: PythonSpec | None = None
    docker: DockerSpec | None = None
    environment_variables: dict[str, str] | None = None


class ContainerPolicy(_Strict):
    """How a cluster's Docker runs are confined. Hardened by default: relaxing any of it
    takes an explicit setting on the cluster."""

    image: str | None = Check(
        default=None,
        min_length=1,
        max_length=512,
        description="Default image for runs that name none",
    )
    user: str = Check(
        default="1000:1000",
        pattern=r"^[0-9]+(:[0-9]+)?$",
        description="uid:gid the run executes as (never root by default)",
    )
    allow_root: bool = False
    read_only_root: bool = True
    drop_capabilities: bool = True
    no_new_privileges: bool = True
    network: Literal["bridge", "none", "host"] = "bridge"
    memory_mib: int = Check(default=4096, ge=16, le=4 * 1024 * 1024)
    cpus: float = Check(default=2.0, gt=0, le=1024)
    pids: int = Check(default=1024, ge=16, le=1_000_000)
    tmp_mib: int = Check(default=1024, ge=1, le=1024 * 1024)
    shm_mib: int = Check(default=256, ge=1, le=1024 * 1024)
    gpus_per_run: int = Check(default=0, ge=0, le=64)
    registry: str | None = Check(
        default=None,
        pattern=r"^[A-Za-z0-9.\-]+(:[0-9]+)?(/[a-z0-9._\-]+)*$",
        max_length=255,
        description="Image registry (host[:port][/path]) the cluster's workers share built "
        "environments through: one worker builds and pushes, the others pull",
    )

    @model_validator(mode="after")
    def _root_only_when_allowed(self) -> ContainerPolicy:
        if self.user.split(":")[0] == "0" and not self.allow_root:
            raise ValueError("user 0 (root) needs allow_root: true on the cluster")
        return self


def check_container(value: dict[str, Any]) -> dict[str, Any]:
    return ContainerPolicy.model_validate(value).model_dump(exclude_unset=True)


def check_environment(value: dict[str, Any]) -> dict[str, Any]:
    """The environment as given, its packages read as a build reads them: one no build
    could install (a URL, a malformed requirement) is refused now (``BadRequirement``, a
    422), not at the first run."""
    checked = EnvironmentSpec.model_validate(value).model_dump(exclude_unset=True)
    build_spec(checked)
    return checked


def merge_environments(default: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The run's environment over its cluster's default, section by section."""
    merged = {**default, **own}
    for section in ("python", "docker", "environment_variables"):
        if isinstance(default.get(section), dict) and isinstance(own.get(section), dict):
            merged[section] = {**default[section], **own[section]}
    return merged


def wants_container(environment: dict[str, Any]) -> bool:
    docker = environment.get("docker") or {}
    return bool(docker.get("enabled") or docker.get("base_image") or docker.get("base_dockerfile"))


def has_image(environment: dict[str, Any], container: dict[str, Any] | None) -> bool:
    """Can a container run of this environment start from some image?"""
    dockerfile = (environment.get("docker") or {}).get("base_dockerfile")
    return bool(dockerfile or image_of(environment, container))


NO_IMAGE = "no Docker image: set environment.docker.base_image or the cluster's container.image"


def image_of(environment: dict[str, Any], container: dict[str, Any] | None) -> str | None:
    """The image a container run starts from: its environment's, else its cluster's (a
    ``base_dockerfile`` names its own, in its FROM: ``has_image``)."""
    return (environment.get("docker") or {}).get("base_image") or (container or {}).get("image")
