"""Helpers the end-to-end tests share: script folders and environments."""

from __future__ import annotations

import sys
from pathlib import Path

from runyard.core import Environment


def write(folder: Path, files: dict[str, str]) -> Path:
    """A script folder with these files (names may contain sub-folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def local_env() -> Environment:
    """A user-managed environment running this very Python (which has Runyard installed)."""
    env = Environment("local-python")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = sys.executable
    return env
