"""``Experiment``: a named group of runs; ``submit`` packs a folder and queues it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from runyard.core.script_run_config import ScriptRunConfig
from runyard.errors import ConfigurationError, InvalidInput

if TYPE_CHECKING:
    from runyard.core.run import Run
    from runyard.core.workspace import Workspace


def snapshot_limits():  # type: ignore[no-untyped-def]
    """``RUNYARD_SNAPSHOT_MAX_BYTES`` / ``RUNYARD_SNAPSHOT_MAX_FILES`` override the defaults."""
    from runyard import snapshot  # needs pathspec: only where runs are submitted from

    return snapshot.SnapshotLimits(
        max_bytes=_int_from_env("RUNYARD_SNAPSHOT_MAX_BYTES", snapshot.DEFAULT_MAX_BYTES),
        max_files=_int_from_env("RUNYARD_SNAPSHOT_MAX_FILES", snapshot.DEFAULT_MAX_FILES),
    )


def _int_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1")
    return value


class Experiment:
    def __init__(self, workspace: Workspace, name: str, **_azure_only: Any) -> None:
        self.workspace = workspace
        self.name = name

    def submit(self, config: ScriptRunConfig, tags: dict[str, str] | None = None, **_: Any) -> Run:
        from runyard.core.run import Run

        if not isinstance(config, ScriptRunConfig):
            raise InvalidInput("submit() takes a ScriptRunConfig")
        if not config.script:
            raise InvalidInput("ScriptRunConfig needs a script")
        if not config.cluster:
            raise InvalidInput("ScriptRunConfig needs a compute_target (the cluster name)")
        if not os.path.isfile(os.path.join(config.source_directory, config.script)):
            raise InvalidInput(f"script {config.script!r} not found in {config.source_directory}")
        from runyard import snapshot

        packed = snapshot.pack(config.source_directory, snapshot_limits())
        spec = {
            "experiment": self.name,
            "cluster": config.cluster,
            "script": config.script,
            "arguments": config.arguments,
            "environment": config.environment.to_dict(),
            "priority": config.priority,
            "snapshot_digest": packed.digest,
        }
        client = self.workspace.client
        archive = None if client.has_snapshot(packed.digest) else packed.archive
        data = client.submit(spec, archive)
        return Run(self, data["id"], _details=data)

    def start_logging(
        self,
        *args: Any,
        outputs: Any = None,
        snapshot_directory: Any = None,
        display_name: Optional[str] = None,
        **kwargs: Any,
    ) -> Run:
        """An interactive run (a notebook, a script run by hand) logging through the API."""
        from runyard.client import Client
        from runyard.core.run import Run, _close_at_exit
        from runyard.tracking.sinks import HttpSink

        client = self.workspace.client
        data = client.json(
            "POST",
            "/runs/interactive",
            json={"experiment": self.name, "display_name": display_name},
        )
        # The run logs with its own token (this run and its children, while it runs).
        run_client = Client(client.base_url, data.get("run_token") or client.token)
        sink = HttpSink(run_client, data["id"])
        _close_at_exit(sink)
        return Run(self, data["id"], _details=data, _sink=sink)

    def get_runs(
        self,
        type: str | None = None,
        tags: Any = None,
        properties: Any = None,
        include_children: bool = False,
    ) -> Iterator[Run]:
        """Runs of this experiment, newest first (as Azure returns them)."""
        from runyard.core.run import Run

        for data in self.workspace.client.list_runs(experiment=self.name, limit=500):
            if include_children or not data.get("parent_run_id"):
                yield Run(self, data["id"], _details=data)

    def get_portal_url(self) -> str:
        return f"{self.workspace.url}/experiments/{self.name}"

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"
