"""The environment a run ran with, as ``runyard show`` and ``runyard env build --wait``
print it: name and version, content hash, cached or built (and how long), the packages."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from runyard.cli import output

LABEL = 16  # the width of ``runyard show``'s field names


def rows(used: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines; the package list one package a line, under one label."""
    name = used.get("name") or "(unnamed)"
    shown = f"{name}:{used['version']}" if used.get("version") else name
    if used.get("hash") is None:
        built = "nothing to build"
    elif used.get("cached"):
        built = "cached"
    else:
        built = f"built in {float(used.get('build_seconds') or 0):.1f} s"
    lines = [
        ("environment", shown),
        ("env hash", used.get("hash") or "-"),
        ("env build", built),
    ]
    if used.get("image"):
        lines.append(("env image", used["image"]))
    if used.get("venv"):
        lines.append(("env venv", used["venv"]))
    packages = list(used.get("packages") or [])
    lines.append(("packages", f"{len(packages)}"))
    lines += [("", package) for package in packages]
    return lines


def print_rows(used: dict[str, Any]) -> None:
    for label, value in rows(used):
        line = Text(f"{label:{LABEL}}", style="bold").append(f" {output.printable(value)}")
        output.console.print(line, highlight=False)
