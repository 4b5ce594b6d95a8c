"""``ScriptRunConfig``: what to run (folder, entry script, arguments) and where."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from runyard.core.environment import Environment


class ScriptRunConfig:
    def __init__(
        self,
        source_directory: str | os.PathLike[str] = ".",
        script: str | None = None,
        arguments: Sequence[Any] | None = None,
        run_config: Any = None,
        compute_target: Any = None,
        environment: Environment | None = None,
        *,
        priority: int = 0,
        **_azure_only: Any,
    ) -> None:
        self.source_directory = os.fspath(source_directory)
        self.script = script
        self.arguments = [str(a) for a in (arguments or [])]
        self.run_config = run_config
        self.compute_target = compute_target
        self.environment = environment or Environment()
        self.priority = priority

    @property
    def cluster(self) -> str | None:
        target = self.compute_target
        if target is None or isinstance(target, str):
            return target
        if isinstance(target, dict):
            return target.get("name")
        return getattr(target, "name", None)
