"""Environment builds (``env.build(ws)``): what a client asks for. A build is a run of its
own, shown as one (``RunDetails``); it builds the environment on a worker of its cluster
and ends, with no script."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, field_validator
from sqlmodel import Field, SQLModel

from protocol.environments import check_environment
from store.models.names import check_cluster_name


class EnvironmentBuildSpec(SQLModel):
    """What a client submits (``POST /api/v1/environment-builds``)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    environment: dict[str, Any] = Field(
        description="The environment to build, as Environment.to_dict() writes it"
    )
    cluster: str | None = Field(
        default=None,
        description="Cluster whose workers build it (Azure's image_build_compute); none "
        "means the default cluster",
    )

    @field_validator("environment")
    @classmethod
    def _valid_environment(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_environment(value)

    @field_validator("cluster")
    @classmethod
    def _valid_cluster(cls, value: str | None) -> str | None:
        return None if value is None else check_cluster_name(value)
