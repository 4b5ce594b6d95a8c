"""Why an installer failed, in plain words: the run's reason names the package, then the
installer's own last error lines follow (in the reason and the build log).

Installers run with ``--no-build``: wheels only. Building an sdist runs the package's own
build code on the worker host, as the worker's user, with its settings."""

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
# uv with --no-build: "hint: Wheels are required for `srconly` because building from
# source is disabled for all packages (i.e., with `--no-build`)".
_NO_WHEEL = re.compile(r"Wheels are required for `(?P<name>[^`]+)` because building from source")
MAX_REASON = 1500


def installer_failure(spec: BuildSpec, output_tail: list[str], target: str) -> str:
    """The run's failure reason for a failed install, from its last output lines;
    ``target`` is what it installed for ("Python 3.11 on x86_64-manylinux_2_36")."""
    text = " ".join(output_tail)
    cause = _plain_cause(spec, text, target)
    detail = " | ".join(line.strip() for line in output_tail if line.strip())
    reason = f"environment build failed: {cause}" if cause else "environment build failed"
    if detail:
        reason += f" (installer: {detail})"
    return reason[:MAX_REASON]


def _plain_cause(spec: BuildSpec, text: str, target: str) -> str | None:
    no_wheel = _NO_WHEEL.search(text)
    if no_wheel:
        return (
            f"package {canonicalize_name(no_wheel['name'])!r} has no wheel for {target} in "
            "the worker's package index; Runyard installs wheels only: building from source "
            "would run the package's code on the worker host"
        )
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
