"""Pip requirements as an AML script gives them: one string, or a requirements file.

Every package of a Runyard build comes from the worker host's own package index (its pip
configuration), so what would point pip elsewhere is refused here, with the line that
asked for it: index options (``--index-url``, ``-f``, ``-e``), URLs and paths. The service
checks each requirement again (``protocol.build_specs``); this side only catches, before
anything is sent, what can never build. Standard library only, Python 3.9 syntax: the run
side imports ``runyard.core``.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from runyard.core.spec_files import read_text
from runyard.errors import BadRequirement, InvalidInput, NotSupported

_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_ARCHIVE = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")
_INCLUDE = ("-r", "--requirement")
SDK_PREFIX = "azureml"  # Azure's SDK packages: Runyard gives every run its own SDK instead

FROM_THE_INDEX = (
    "packages come from the worker host's package index (its pip configuration), which "
    "serves every build"
)


def canonical_name(name: str) -> str:
    """A package name as pip compares it (PEP 503): ``Scikit_Learn`` is ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def name_of(requirement: str) -> Optional[str]:
    """The canonical package name a requirement starts with (None: it names none)."""
    found = _NAME.match(requirement)
    return canonical_name(found.group(1)) if found else None


def is_sdk_package(requirement: str) -> bool:
    """``azureml-defaults``, ``azureml-core``...: listed by AML scripts, not needed here."""
    name = name_of(requirement) or ""
    return name == SDK_PREFIX or name.startswith(SDK_PREFIX + "-")


def check(requirement: str, where: str) -> str:
    """``requirement`` stripped, or the one line that says why no build could install it."""
    if not isinstance(requirement, str):
        raise InvalidInput(f"{where}: a pip package is a string, not {requirement!r}")
    text = requirement.strip()
    if not text:
        raise InvalidInput(f"{where}: an empty pip package")
    if text.startswith("-"):
        raise NotSupported(f"{where}: {text!r}: pip options are not supported; {FROM_THE_INDEX}")
    if " --" in text or "\t--" in text:
        raise NotSupported(
            f"{where}: {text!r}: per-requirement options (such as --hash) are not supported"
        )
    if _is_location(text):
        raise BadRequirement(
            f"{where}: {text!r} is a URL or a path; {FROM_THE_INDEX} (name the package and "
            "its version instead)"
        )
    if name_of(text) is None:
        raise BadRequirement(f"{where}: {text!r} is not a pip requirement (it names no package)")
    return text


def _is_location(text: str) -> bool:
    lowered = text.lower().split(";")[0].strip()
    return (
        "://" in lowered
        or " @ " in lowered
        or lowered.startswith((".", "/", "~", "file:", "git+"))
        or lowered.endswith(_ARCHIVE)
    )


def read_file(path: str) -> List[str]:
    """The requirements a requirements file lists, in order: ``-r`` files included
    (relative to the file that names them), comments, blank lines and line continuations
    as pip reads them."""
    return _read(os.path.abspath(path), shown=str(path), including=())


def _read(path: str, shown: str, including: Tuple[str, ...]) -> List[str]:
    if path in including:
        raise InvalidInput(f"{shown}: includes itself (through -r)")
    text = read_text(path, f"requirements file {shown}")
    found: List[str] = []
    for number, line in _logical_lines(text):
        where = f"{shown} line {number}"
        included = _included(line)
        if included is not None:
            target = os.path.join(os.path.dirname(path), included)
            shown_target = os.path.join(os.path.dirname(shown), included)
            found.extend(_read(os.path.abspath(target), shown_target, (*including, path)))
            continue
        found.append(check(line, where))
    return found


def _logical_lines(text: str) -> List[Tuple[int, str]]:
    """(first line number, line) with comments gone and ``\\`` continuations joined."""
    lines: List[Tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = re.sub(r"(^|\s)#.*$", "", pending + raw).strip()
        pending = ""
        if line:
            lines.append((start, line))
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def _included(line: str) -> Optional[str]:
    """The file a ``-r FILE`` / ``--requirement=FILE`` line names (None: not one)."""
    for option in _INCLUDE:
        if line == option:
            raise InvalidInput(f"{line!r} names no file")
        for separator in (" ", "=", "\t"):
            if line.startswith(option + separator):
                return line[len(option) + 1 :].strip()
    if line.startswith("-r") and not line.startswith("--"):
        return line[2:].strip()
    return None
