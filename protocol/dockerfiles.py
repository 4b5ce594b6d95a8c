"""What a ``base_dockerfile`` may do: everything a build with no network can do, nothing
that makes the Docker engine itself fetch.

``network none`` only cuts the build's containers off: the engine still downloads an
``ADD <url>`` (or a git ref) and pulls a FROM or ``COPY --from`` image it lacks, with its
own network and credentials. So those are refused at submit (``check``), and the worker
makes every image the file names present before it builds (``images``). The file is read
with Docker's own parser (the ``dockerfile`` package wraps it), so what is checked is what
the engine will run; parser directives (``# syntax=``, ``# escape=``) are refused, as they
would change how the engine reads it.
"""

from __future__ import annotations

import re

import dockerfile

from runyard.errors import BadRequirement

# Docker's parser directive: ``# key=value`` before any instruction, comment or blank line.
_DIRECTIVE = re.compile(r"^#[ \t]*([A-Za-z][A-Za-z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
# A source the engine would fetch: a URL of any scheme, or a git remote.
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^git@|\.git(#.*)?$", re.I)
SCRATCH = "scratch"


def _commands(text: str) -> tuple[dockerfile.Command, ...]:
    for line in text.splitlines():
        directive = _DIRECTIVE.match(line.strip())
        if directive is None:
            break
        raise BadRequirement(
            f"base_dockerfile: parser directive '# {directive[1]}={directive[2]}' is not "
            "allowed (builds use Docker's own syntax and escape character)"
        )
    try:
        return dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "cannot be read"
        raise BadRequirement(f"base_dockerfile: {reason}") from exc


def _flag(command: dockerfile.Command, name: str) -> str | None:
    for flag in command.flags:
        key, _, value = flag.partition("=")
        if key.lower() == f"--{name}":
            return value
    return None


def _refuse(line: int | None, why: str) -> BadRequirement:
    where = f"base_dockerfile line {line}" if line is not None else "its ONBUILD step"
    return BadRequirement(f"{where}: {why}")


def check(text: str) -> None:
    """Refuses (``BadRequirement``, one line naming the line) what would make the engine
    reach the network: ADD of a URL or git ref, an image named through a variable (the
    engine would pull whatever it expands to), ``FROM --platform`` (another platform's
    image is pulled), and ONBUILD steps that would do so in the build FROM this one."""
    _check_commands(_commands(text), nested=False)


def check_triggers(triggers: list[str]) -> None:
    """An image's ONBUILD triggers run in every build FROM it (the environment's image is
    one): the same refusals as for a base_dockerfile's own steps."""
    if triggers:
        _check_commands(_commands("\n".join(triggers)), nested=True, line=None)


def _check_commands(
    commands: tuple[dockerfile.Command, ...], nested: bool, line: int | None = 0
) -> None:
    """``line``: the line to name (an ONBUILD's), 0 for each command's own, None for an
    image's triggers (no file to point into)."""
    for command in commands:
        at = command.start_line if line == 0 else line
        instruction = command.cmd.upper()
        if instruction == "ONBUILD":  # its step is read as one of its own (with its flags)
            step = command.original.split(None, 1)[1] if " " in command.original else ""
            _check_commands(_commands(step), nested=True, line=at)
            continue
        if instruction == "FROM":
            image = command.value[0] if command.value else ""
            if "$" in image:
                raise _refuse(at, f"FROM {image}: name the image, not a variable")
            if _flag(command, "platform") is not None:
                raise _refuse(at, "FROM --platform: builds use the worker's platform")
        if instruction in ("ADD", "COPY"):
            source = _flag(command, "from")
            if source is not None and nested:
                raise _refuse(
                    at,
                    f"ONBUILD {instruction} --from={source}: the image would be "
                    "pulled in the build FROM this one",
                )
            if source is not None and "$" in source:
                raise _refuse(at, f"{instruction} --from={source}: name a stage or image")
            for part in command.value[:-1]:
                if instruction == "ADD" and (_REMOTE.search(part) or "$" in part):
                    raise _refuse(
                        at,
                        f"ADD {part}: builds have no network and fetch nothing; copy files "
                        "in with the snapshot, or name Python packages as packages",
                    )


def images(text: str) -> list[str]:
    """The images a base_dockerfile builds on (FROM and ``COPY --from``), each once, in
    order: not its own stages, not ``scratch``. Each must be on the worker before the
    build, or the engine would pull it."""
    stages: list[str] = []
    named: list[str] = []

    def add(image: str) -> None:
        if image.lower() in stages or image.lower() == SCRATCH or image in named:
            return
        named.append(image)

    for command in _commands(text):
        instruction = command.cmd.upper()
        if instruction == "FROM" and command.value:
            add(command.value[0])
            if len(command.value) >= 3 and command.value[1].upper() == "AS":
                stages.append(command.value[2].lower())
        elif instruction == "COPY":
            source = _flag(command, "from")
            if source is not None and not source.isdigit():
                add(source)
    return named


def final_base(text: str) -> str | None:
    """The image the last stage stands on (through its own stages), None for ``scratch``:
    what an environment image built from this file must have below its own layers."""
    bases: dict[str, str] = {}
    last: str | None = None
    for command in _commands(text):
        if command.cmd.upper() == "FROM" and command.value:
            image = command.value[0]
            resolved = bases.get(image.lower(), image)
            last = None if resolved.lower() == SCRATCH else resolved
            if len(command.value) >= 3 and command.value[1].upper() == "AS":
                bases[command.value[2].lower()] = last or SCRATCH
    return last
