"""Reading the files a user's code names (a requirements file, a conda environment file):
a missing or unreadable one is one line naming it, never a traceback."""

from __future__ import annotations

from runyard.errors import InvalidInput


def read_text(path: str, what: str) -> str:
    """The text of ``path``; ``what`` names it in the error ("requirements file x.txt")."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        raise InvalidInput(f"{what} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidInput(f"{what}: cannot read it: {reason}") from None
