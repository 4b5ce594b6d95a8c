"""``--help`` without type noise: a plain flag shows no ``<bool>`` after its name.

Typer's rich help prints each parameter's type; for a flag that is noise (``--follow
<bool>`` reads as if it took a value). These command classes blank the type of flags
(``--help`` included); options that take a value keep theirs.
"""

from __future__ import annotations

import click
from typer.core import TyperCommand, TyperGroup


def _quiet_flags(params: list[click.Parameter]) -> list[click.Parameter]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # shown as the type column: nothing
    return params


class Command(TyperCommand):
    """A command whose flags show no type in ``--help``."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _quiet_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A group (``runyard``, ``runyard cluster``) whose flags show no type in ``--help``."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _quiet_flags(super().get_params(ctx))
