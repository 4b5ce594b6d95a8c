"""Why an installer failed, in plain words: the run's reason names the package, then the
installer's own last error lines follow (in the reason and the build log)."""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

from protocol.build_specs import BuildSpec

# uv's resolver explains itself in sentences: "Because nosuchpkg was not found in the
# package registry ..." / "... in the provided package locations ..." / "Because there is
# no version of tinypkg==9.9 ...".
_NOT_FOUND = re.compile(r"Because (?P<name>[A-Za-z0-9_.\-]+) was not found in the")
_NO_VERSION = re.compile(r"there is no version of (?P<requirement>[A-Za-z0-9_.\-]+\S*)")
_ONLY = re.compile(
    r"only (?P<name>[A-Za-z0-9_.\-]+)\S* (?:is|are) available and you require (?P<wanted>\S+)"
)
MAX_REASON = 1500


def installer_failure(spec: BuildSpec, output_tail: list[str]) -> str:
    """The run's failure reason for a failed install, from its last output lines."""
    text = " ".join(output_tail)
    cause = _plain_cause(spec, text)
    detail = " | ".join(line.strip() for line in output_tail if line.strip())
    reason = f"environment build failed: {cause}" if cause else "environment build failed"
    if detail:
        reason += f" (installer: {detail})"
    return reason[:MAX_REASON]


def _plain_cause(spec: BuildSpec, text: str) -> str | None:
    missing = _NOT_FOUND.search(text)
    if missing:
        name = canonicalize_name(missing["name"])
        if name in spec.from_conda:
            return (
                f"conda package {name!r} is not on the package index, and this worker has "
                "no conda channel (name a pip package instead)"
            )
        return f"package {name!r} was not found in the worker's package index"
    no_version = _NO_VERSION.search(text)
    if no_version:
        wanted = no_version["requirement"].rstrip(",.")
        return f"no version of the package matches {wanted!r} in the worker's package index"
    only = _ONLY.search(text)
    if only:
        return f"no version of the package matches {only['wanted'].rstrip(',.')!r}"
    return None
