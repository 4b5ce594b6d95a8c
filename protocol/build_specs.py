"""What an environment build is made of, normalized, and the content hash that names it.

An environment's identity is what determines its contents, never its name: the same
packages under two names build once, and one changed package builds anew. The spec half of
the hash (``BuildSpec.digest``) is known anywhere; the whole hash (``BuildSpec.build_digest``)
adds the base it is built on (an image id, an interpreter), which only a worker can see.

No conda runs anywhere: ``conda_packages`` are translated into requirements for the worker
host's package index (``conda_requirement``), the way ClearML's agent installs a conda task
without conda; ``python=X.Y`` picks the interpreter and ``pip`` is always there.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from protocol import dockerfiles
from runyard.core.conda_dependencies import python_version_of
from runyard.errors import BadRequirement

FORMAT = 1  # bump when the way a build is made changes what it contains
DIGEST_LENGTH = 32  # hex characters: a Docker tag, a folder name, what the CLI shows


@dataclass(frozen=True)
class BuildSpec:
    requirements: tuple[str, ...]  # normalized PEP 508 strings, sorted, each once
    from_conda: tuple[str, ...] = ()  # canonical names asked for as conda packages
    python_version: str | None = None  # "3.11": the interpreter must be this one
    dockerfile: str | None = None  # extra build steps (Docker clusters only)
    channels: tuple[str, ...] = ()  # the conda channels named; kept for messages only

    def digest(self) -> str:
        """The spec's own hash: what a registered environment version is known by."""
        content = {
            "format": FORMAT,
            "requirements": list(self.requirements),
            "python": self.python_version,
            "dockerfile": self.dockerfile,
        }
        return _hash(json.dumps(content, sort_keys=True))

    def build_digest(self, base: str) -> str:
        """The build's hash: the spec's over the identity of what it is built on."""
        return _hash(f"{self.digest()}\n{base}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]


def build_spec(environment: dict[str, Any]) -> BuildSpec | None:
    """What must be built for a run's (merged) environment; None when nothing is: a
    user-managed Python, or an environment that names no packages and no build steps."""
    python = environment.get("python") or {}
    if python.get("user_managed_dependencies"):
        return None
    conda = python.get("conda_dependencies") or {}
    dockerfile = (environment.get("docker") or {}).get("base_dockerfile") or None
    if dockerfile:
        dockerfiles.check(dockerfile)  # nothing in it may make the engine fetch
    python_version = conda.get("python_version")
    requirements: set[str] = set()
    from_conda: set[str] = set()
    for spec in conda.get("conda_packages") or []:
        name, version = _conda_name_version(spec)
        if name == "python":
            python_version = python_version or python_version_of(spec, version)
            continue
        if name == "pip":
            continue
        requirement = conda_requirement(spec)
        requirements.add(requirement)
        from_conda.add(canonicalize_name(name))
    for text in conda.get("pip_packages") or []:
        requirements.add(normalize_requirement(text))
    if not requirements and not dockerfile and not python_version:
        return None
    return BuildSpec(
        requirements=tuple(sorted(requirements)),
        from_conda=tuple(sorted(from_conda)),
        python_version=python_version,
        dockerfile=dockerfile,
        channels=tuple(conda.get("channels") or ()),
    )


def normalize_requirement(text: str) -> str:
    """One pip requirement, its name canonical and its parts in a fixed order. URLs and
    paths are refused: every package comes from the worker host's own index."""
    try:
        requirement = Requirement(text.strip())
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]  # packaging adds the text and a caret below
        raise BadRequirement(f"pip package {text!r} is not a valid requirement: {reason}") from exc
    if requirement.url:
        raise BadRequirement(
            f"pip package {text!r} names a URL; packages come from the worker host's "
            "package index only (name the package and its version instead)"
        )
    requirement.name = canonicalize_name(requirement.name)
    return str(requirement)


_CONDA_SPEC = re.compile(r"^(?:[^:\s]+::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<rest>.*)$")
_OPERATORS = ("==", ">=", "<=", "!=", "~=", ">", "<")


def _conda_name_version(spec: str) -> tuple[str, str]:
    match = _CONDA_SPEC.match(spec.strip())
    if match is None:
        raise BadRequirement(f"conda package {spec!r} is not a conda match spec")
    return canonicalize_name(match["name"]), match["rest"].strip()


def conda_requirement(spec: str) -> str:
    """A conda match spec as a pip requirement: ``numpy=1.26`` (conda: any 1.26.x) is
    ``numpy==1.26.*``, ``numpy 1.26.4 py311_0`` is ``numpy==1.26.4`` (a build string means
    nothing to pip), ``scipy>=1.10,<2`` stays as it is."""
    name, rest = _conda_name_version(spec)
    if not rest:
        return name
    if rest.startswith(_OPERATORS):
        return normalize_requirement(f"{name}{rest.replace(' ', '')}")
    version = rest.lstrip("=").split("=")[0].split()[0]
    if not re.fullmatch(r"[0-9][0-9A-Za-z.*+!]*", version):
        raise BadRequirement(f"conda package {spec!r}: cannot read its version {version!r}")
    if rest.startswith("==") or "*" in version or version.count(".") >= 2:
        return normalize_requirement(f"{name}=={version}")
    return normalize_requirement(f"{name}=={version}.*")


def matches_python(wanted: str | None, actual: tuple[int, ...]) -> bool:
    """Does the interpreter ``actual`` (``sys.version_info``) satisfy ``python_version``
    ("3", "3.11" or "3.11.4": each part given must match)?"""
    if not wanted:
        return True
    parts = [int(p) for p in wanted.split(".")]
    return list(actual[: len(parts)]) == parts
