"""``Experiment``: a named group of runs; ``submit`` packs a folder and queues it."""

from __future__ import annotations

import html
import os
import posixpath
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Sequence, Tuple

from runyard import config as client_config
from runyard.core.script_run_config import ScriptRunConfig
from runyard.errors import ConfigurationError, InvalidInput, NotSupported
from runyard.tracking.contract import OUTPUTS_DIR

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
    def __init__(self, workspace: Workspace, name: str, _skip_name_validation: bool = False,
                 _id: Any = None, _archived_time: Any = None, _create_in_cloud: bool = True,
                 _experiment_dto: Any = None) -> None:  # fmt: skip
        self.workspace = workspace
        self.name = name

    def submit(
        self, config: ScriptRunConfig, tags: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> Run:
        """Pack ``config.source_directory`` and queue the run; ``tags`` are set on it from
        the start. Without a compute target it goes to the service's default cluster."""
        from runyard.core.run import Run

        parent = kwargs.pop("_parent_run_id", None)
        display_name = kwargs.pop("display_name", None)
        if kwargs:
            raise NotSupported(
                f"submit() options {', '.join(sorted(kwargs))} are not supported "
                "(only tags and display_name)"
            )
        spec, archive = self._packed_spec(config, tags, display_name, "submit")
        spec["arguments"] = [str(a) for a in config.arguments]
        if parent:
            spec["parent_run_id"] = parent
        data = self.workspace.client.submit(spec, archive)
        return Run(self, data["id"], _details=data)

    def submit_array(
        self,
        config: ScriptRunConfig,
        arguments_list: Sequence[Sequence[Any]],
        tags: Optional[Dict[str, Any]] = None,
        display_name: Optional[str] = None,
    ) -> RunArray:
        """A job array (a Runyard extension; Slurm's ``--array``, the children of an Azure
        HyperDrive sweep): one run per entry of ``arguments_list``, each with ``config``'s
        folder, script and environment and that entry as its arguments, queued in one
        request with one snapshot upload. All or none are queued. Returns the runs in
        order (read lazily), with the array's id as ``array_id``."""
        if isinstance(arguments_list, (str, bytes)) or not all(
            isinstance(a, (list, tuple)) for a in arguments_list
        ):
            raise InvalidInput("arguments_list is a list of argument lists, one per run")
        if not arguments_list:
            raise InvalidInput("arguments_list is empty: a job array needs at least one run")
        if config.arguments:
            raise InvalidInput(
                "give a job array's arguments in arguments_list, not in the ScriptRunConfig"
            )
        spec, archive = self._packed_spec(config, tags, display_name, "submit_array")
        spec["arguments_list"] = [[str(a) for a in entry] for entry in arguments_list]
        data = self.workspace.client.submit_array(spec, archive)
        return RunArray(self, data["array_id"], data["run_ids"])

    def _packed_spec(
        self,
        config: ScriptRunConfig,
        tags: Optional[Dict[str, Any]],
        display_name: Optional[str],
        verb: str,
    ) -> Tuple[Dict[str, Any], Optional[bytes]]:
        """The spec every run of ``config`` shares (not its arguments), with the packed
        folder's digest, and the archive when the service does not have it yet."""
        from runyard import snapshot

        if not isinstance(config, ScriptRunConfig):
            raise InvalidInput(f"{verb}() takes a ScriptRunConfig, not a {type(config).__name__}")
        if not config.script:
            raise InvalidInput("ScriptRunConfig needs a script")
        if not os.path.isdir(config.source_directory):
            what = (
                "is not a folder" if os.path.exists(config.source_directory) else "does not exist"
            )
            raise InvalidInput(f"folder {config.source_directory} {what}")
        if not os.path.isfile(os.path.join(config.source_directory, config.script)):
            raise InvalidInput(f"script {config.script!r} not found in {config.source_directory}")
        config.run_config.check()
        spec: Dict[str, Any] = {
            "experiment": self.name,
            "cluster": config.cluster,
            "script": config.script,
            "environment": config.run_config.environment_spec(),
            "priority": config.priority,
        }
        if config.max_run_duration_seconds is not None:
            spec["max_run_duration_seconds"] = config.max_run_duration_seconds
        # Sent only when set: a service without teams refuses no spec it did before.
        if config.team is not None:
            spec["team"] = str(config.team)
        if not config.preemptible:
            spec["preemptible"] = False
        if tags:
            spec["tags"] = {str(k): None if v is None else str(v) for k, v in tags.items()}
        if display_name is not None:
            spec["display_name"] = str(display_name)
        client = self.workspace.client
        # Never ship a token: a file holding the caller's (or one the user keeps in the
        # credentials file) is left out, as are Runyard's configs and data folders.
        tokens = [client.token] if client.token else []
        packed = snapshot.pack(
            config.source_directory, snapshot_limits(), tokens + client_config.stored_tokens()
        )
        script = posixpath.normpath(str(config.script).replace(os.sep, "/"))
        for left in packed.left_out:
            if script == left or (left.endswith("/") and script.startswith(left)):
                raise InvalidInput(
                    f"script {config.script!r} is left out of the snapshot: it holds a "
                    "Runyard secret (see above); a run gets its own token as RUNYARD_TOKEN"
                )
        spec["snapshot_digest"] = packed.digest
        archive = None if client.has_snapshot(packed.digest) else packed.archive
        return spec, archive

    def start_logging(
        self,
        *args: Any,
        outputs: Any = None,
        snapshot_directory: Any = None,
        display_name: Optional[str] = None,
        **kwargs: Any,
    ) -> Run:
        """An interactive run (a notebook, a script run by hand) logging through the API.
        As Azure's, it makes ``./outputs`` (or ``outputs``) and stores what is in it when
        the run completes."""
        from runyard.client import Client
        from runyard.core.run import Run
        from runyard.core.run_context import close_at_exit
        from runyard.tracking.sinks import HttpSink

        if snapshot_directory is not None:
            raise NotSupported(
                "start_logging(snapshot_directory=...) is not supported: interactive runs "
                "keep no snapshot; submit a ScriptRunConfig to record one"
            )
        client = self.workspace.client
        data = client.start_interactive(self.name, display_name)
        # The run logs with its own token (this run and its children, while it runs).
        run_client = Client(client.base_url, data.get("run_token") or client.token)
        sink = HttpSink(run_client, data["id"])
        close_at_exit(sink)
        folder = os.path.abspath(outputs if isinstance(outputs, str) else OUTPUTS_DIR)
        os.makedirs(folder, exist_ok=True)
        return Run(self, data["id"], _details=data, _sink=sink, _outputs=folder)

    def get_runs(
        self,
        type: Optional[str] = None,
        tags: Any = None,
        properties: Any = None,
        include_children: bool = False,
    ) -> Iterator[Run]:
        """Runs of this experiment, newest first (as Azure returns them). ``tags`` and
        ``properties`` filter: a key the run must have, or a dict of keys and values."""
        from runyard.core.run import Run
        from runyard.core.run_filters import run_filters

        filters = run_filters(tags, properties, type, None)
        if not include_children:
            filters["top_level"] = True
        for data in self.workspace.client.iter_runs(experiment=self.name, **filters):
            yield Run(self, data["id"], _details=data)

    def get_portal_url(self) -> str:
        return f"{self.workspace.url}/experiments/{self.name}"

    def _repr_html_(self) -> str:
        link = html.escape(self.get_portal_url(), quote=True)
        return (
            "<table><tr><th>Name</th><th>Workspace</th><th>Report Page</th></tr>"
            f"<tr><td>{html.escape(self.name)}</td><td>{html.escape(self.workspace.name)}</td>"
            f'<td><a href="{link}" target="_blank" rel="noopener">Link to Runyard Studio</a>'
            "</td></tr></table>"
        )

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"


class RunArray(list):  # type: ignore[type-arg]
    """The runs of one job array, in index order (run i ran with ``arguments_list[i]``);
    each is read from the service when first asked about."""

    def __init__(self, experiment: Experiment, array_id: str, run_ids: Sequence[str]) -> None:
        from runyard.core.run import Run

        super().__init__(Run(experiment, run_id) for run_id in run_ids)
        self.array_id = array_id

    def __repr__(self) -> str:
        return f"RunArray(array_id={self.array_id!r}, runs={len(self)})"
