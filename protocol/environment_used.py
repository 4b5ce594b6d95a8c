"""The environment a run ran with, as its worker reports it (``StateChanged.environment``,
sent with Starting) and as the run record keeps it: name, version, content hash and the
resolved package list.

A report is checked whole before anything of it is stored: its shape, and bounded sizes
(a package list of at most ``MAX_PACKAGES`` entries of at most ``PACKAGE_LENGTH``
characters each). A report that fails the check is left out, never stored in part.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from pydantic import Field as Check

from protocol.build_specs import DIGEST_LENGTH
from runyard.errors import MessageError

MAX_PACKAGES = 2000  # resolved packages one environment may list
PACKAGE_LENGTH = 512  # characters of one entry ("numpy==2.1.3")
MAX_BUILD_SECONDS = 7 * 24 * 3600.0

Digest = Annotated[str, StringConstraints(pattern=rf"^[0-9a-f]{{{DIGEST_LENGTH}}}$")]
Package = Annotated[str, StringConstraints(min_length=1, max_length=PACKAGE_LENGTH)]


class EnvironmentUsed(BaseModel):
    """What a worker ran a run with. ``hash`` is the build's content hash (None: nothing
    was built, e.g. a user-managed Python or a plain image); ``cached``: no build was
    needed this time; ``build_seconds``: how long this attempt spent building."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Check(default=None, max_length=255)
    version: str | None = Check(default=None, max_length=64)
    hash: Digest | None = None
    spec_hash: Digest | None = None
    packages: list[Package] = Check(default_factory=list, max_length=MAX_PACKAGES)
    image: str | None = Check(default=None, max_length=512)  # runyard-env:<hash> (Docker)
    venv: str | None = Check(default=None, max_length=4096)  # the build's folder (local)
    cached: bool = True
    build_seconds: float = Check(default=0.0, ge=0.0, le=MAX_BUILD_SECONDS, allow_inf_nan=False)


def check_environment_used(value: Any) -> dict[str, Any]:
    """The report as stored (every field present), or ``MessageError`` saying what is wrong
    with it in a few words."""
    if not isinstance(value, dict):
        raise MessageError(f"expected an object, not {type(value).__name__}")
    try:
        return EnvironmentUsed.model_validate(value).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "report"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MessageError(f"{where}: {first['msg']}{more}") from None


def nothing_built(environment: dict[str, Any]) -> dict[str, Any]:
    """The report for a run whose environment needed no build: its name and version,
    no hash, no packages."""
    return EnvironmentUsed(
        name=environment.get("name"), version=environment.get("version")
    ).model_dump()
