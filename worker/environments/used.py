"""What a run got: the environment it runs in, as the worker reports it with STARTING
(the contract's "EnvironmentUsed": name, version, hashes, resolved packages, where it is,
whether it was built for this run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from protocol.environment_used import EnvironmentUsed, nothing_built


@dataclass
class Built:
    """A built environment a run uses (found in the cache, pulled, or built now)."""

    hash: str
    spec_hash: str
    packages: list[str] = field(default_factory=list)
    image: str | None = None
    venv: str | None = None
    cached: bool = False
    build_seconds: float = 0.0


def environment_used(environment: dict[str, Any], built: Built | None) -> dict[str, Any]:
    """The report (``protocol.environment_used``) of a run's environment and its build."""
    if built is None:
        return nothing_built(environment)
    return EnvironmentUsed(
        name=environment.get("name"),
        version=environment.get("version"),
        hash=built.hash,
        spec_hash=built.spec_hash,
        packages=sorted(built.packages),
        image=built.image,
        venv=built.venv,
        cached=built.cached,
        build_seconds=round(built.build_seconds, 3),
    ).model_dump()


def installed_packages(*folders: Path) -> list[str]:
    """``name==version`` of each distribution installed in ``folders`` (read from their
    metadata in place: no installer runs for it)."""
    found = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in metadata.distributions(path=[str(f) for f in folders])
        if dist.metadata["Name"]
    }
    return sorted(found)
