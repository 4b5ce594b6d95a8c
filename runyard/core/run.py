"""``Run``: one execution of a script, with the Azure ML logging API.

The same class serves three cases, as in ``azureml.core``:
- ``Run.get_context()`` inside a submitted run: events go to the channel the worker tails;
- ``Experiment.start_logging()`` or ``Run(experiment, run_id)``: events go to the API;
- ``Run.get_context()`` anywhere else: an offline run that prints what it would log.
Logging never raises into the training script: a bad call prints one line and is dropped.
``log()`` and its siblings return at once; what Azure makes synchronous (``complete()``,
``fail()``, ``tag()``, ``set_tags()``, ``add_properties()``, ``upload_file()``,
``upload_folder()``, ``flush()``, leaving a ``with`` block) returns once its effect, and
everything logged before it, is stored and visible to every reader.

What is not one run's lives beside it: the process's context run and the flush at exit
(``run_context``), Azure's shapes of details and metrics (``run_details``), the filters of
run listings (``run_filters``) and following a run to its end (``run_follow``). The class
stays whole, over 400 lines: it mirrors ``azureml.core.Run`` method for method, and a
reader looks for one of them here, not across mixins.
"""

from __future__ import annotations

import html
import io
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Union

from runyard.core import run_context
from runyard.core.run_details import details_from, metrics_from
from runyard.core.run_filters import run_filters
from runyard.core.run_follow import follow_to_end
from runyard.errors import Conflict, InvalidInput, NotSupported, RunFailed
from runyard.status import RunStatus
from runyard.tracking import contract
from runyard.tracking import events as ev
from runyard.tracking.sinks import ChannelSink, HttpSink, OfflineSink, Sink, warn

if TYPE_CHECKING:
    from runyard.core.experiment import Experiment

# A submitted run's combined stdout/stderr, as a file of the run (Azure ML's name for it):
# listed by get_file_names(), fetched by download_file(s), the same text as its log.
STD_LOG = "user_logs/std_log.txt"

# Where a Run object's run came from (``Run._origin``).
OFFLINE = "offline"  # Run.get_context() outside Runyard: prints
CONTEXT = "context"  # Run.get_context() in a submitted run: its own process
SUBMITTED = "submitted"  # a submitted run seen from outside: ends with its process
INTERACTIVE = "interactive"  # Experiment.start_logging(): ends when its client says so
CHILD = "child"  # child_run() / create_children(): ends when its script says so


class Run:
    def __init__(
        self, experiment: Experiment, run_id: str, outputs: Any = None, **kwargs: Any
    ) -> None:
        self.experiment = experiment
        self.id = run_id
        self._details: Optional[Dict[str, Any]] = kwargs.get("_details")
        self._sink: Optional[Sink] = kwargs.get("_sink")
        self._parent: Optional[Run] = kwargs.get("_parent")
        self._outputs: Optional[str] = kwargs.get("_outputs")  # collected on completion
        # Which attempt of the run this process is, as its worker said (the context run).
        self._attempt: Optional[int] = kwargs.get("_attempt")
        self._previous_preempted: Optional[bool] = kwargs.get("_previous_attempt_preempted")
        self._limits = ev.RunLimits()
        self._children = 0
        self._images: Dict[str, int] = {}
        self._lock = threading.Lock()

    # --- where events go --------------------------------------------------------------------

    @property
    def _client(self):  # type: ignore[no-untyped-def]
        return self.experiment.workspace.client

    def _events(self) -> Sink:
        """The sink, created on first use for a fetched run (logging to it via the API)."""
        if self._sink is None:
            with self._lock:
                if self._sink is None:
                    self._sink = HttpSink(self._client, self.id)
                    run_context.close_at_exit(self._sink)
        return self._sink

    def _emit(
        self,
        kind: str,
        name: Optional[str],
        value: Any,
        description: str = "",
        step: Optional[int] = None,
    ) -> None:
        event: Dict[str, Any] = {"r": self.id, "k": kind, "v": value, "t": time.time()}
        if name is not None:
            event["n"] = name
        if description:
            event["d"] = description
        if step is not None:
            event["s"] = step
        self._events().emit(event)

    def flush(self, timeout_seconds: int = 300) -> None:
        """Return once everything logged so far is stored and visible to every reader."""
        self._events().sync(timeout=float(timeout_seconds))

    # --- context ----------------------------------------------------------------------------

    @classmethod
    def get_context(
        cls, allow_offline: bool = True, used_for_context_manager: bool = False, **_: Any
    ) -> Run:
        """The run this script executes in, or an offline run outside Runyard."""
        return run_context.context_run(allow_offline)

    # --- logging (azureml.core.Run signatures) ----------------------------------------------

    def log(self, name: str, value: Any, description: str = "", step: Any = None) -> None:
        """A number or string; logging the same name again makes it a vector. ``step``
        places the value at that step (the x axis of its chart)."""
        if step is not None:
            try:
                step = ev.step_value(step)
            except InvalidInput as exc:
                return warn(f"log({name!r}) ignored: {exc}")
        self._metric("log", ev.SCALAR, name, value, ev.scalar_value, description, step)

    def log_list(self, name: str, value: Any, description: str = "") -> None:
        """Any iterable (a generator too) as a vector."""
        self._metric("log_list", ev.LIST, name, value, ev.list_values, description)

    def log_row(self, name: str, description: Optional[str] = None, **kwargs: Any) -> None:
        """One row of a table; repeated rows with two numeric columns chart as x/y."""
        self._metric("log_row", ev.ROW, name, kwargs, ev.row_values, description or "")

    def log_table(self, name: str, value: Any, description: str = "") -> None:
        """A dict of columns (or a pandas DataFrame)."""
        self._metric("log_table", ev.TABLE, name, value, ev.table_values, description)

    def _metric(
        self,
        call: str,
        kind: str,
        name: str,
        raw: Any,
        convert: Callable[[Any, ev.Limits], Any],
        description: str,
        step: Optional[int] = None,
    ) -> None:
        """Check against the run's limits, convert, emit; a bad call prints one line."""
        try:
            self._limits.metric(name, kind)
            value = convert(raw, self._limits.limits)
        except InvalidInput as exc:
            return warn(f"{call}({name!r}) ignored: {exc}")
        self._emit(kind, name, value, description, step)

    def log_image(
        self, name: str, path: Optional[str] = None, plot: Any = None, description: str = ""
    ) -> None:
        """An image file, or a matplotlib ``pyplot`` / figure rendered to PNG."""
        try:
            self._limits.metric(name, ev.IMAGE)
            if (path is None) == (plot is None):
                raise InvalidInput("give exactly one of path or plot")
            if path is not None and not os.path.isfile(path):
                raise InvalidInput(f"no image file at {path}")
        except InvalidInput as exc:
            return warn(f"log_image({name!r}) ignored: {exc}")
        number = self._images[name] = self._images.get(name, 0) + 1
        suffix = Path(path).suffix if path else ".png"
        stored = f"images/{_safe(name)}/{number}{suffix or '.png'}"
        try:
            if plot is not None:
                buffer = io.BytesIO()
                plot.savefig(buffer, format="png")
                buffer.seek(0)
                self._events().store_file(self.id, stored, buffer)
            else:
                self._events().store_file(self.id, stored, str(path))
        except Exception as exc:
            return warn(f"log_image({name!r}) not stored: {exc}")
        self._emit(ev.IMAGE, name, stored, description)

    def tag(self, key: str, value: Any = None) -> None:
        """Set a tag (a valueless one reads back as None); stored when this returns."""
        self._tag(key, value)
        self._events().sync()

    def _tag(self, key: str, value: Any) -> None:
        try:
            text = self._limits.tag(key, value)
        except InvalidInput as exc:
            return warn(f"tag({key!r}) ignored: {exc}")
        self._emit(ev.TAG, key, text)

    def set_tags(self, tags: Dict[str, Any]) -> None:
        if not isinstance(tags, dict):
            return warn("set_tags() takes a dict")
        for key, value in tags.items():
            self._tag(key, value)
        self._events().sync()

    def get_tags(self) -> Dict[str, Optional[str]]:
        return self._read(lambda: self._client.get_tags(self.id), lambda: {})

    def add_properties(self, properties: Dict[str, Any]) -> None:
        """Properties are set once: changing one raises (as Azure's does), and nothing of
        the call is stored."""
        if not isinstance(properties, dict):
            raise InvalidInput("add_properties() takes a dict")
        try:
            clean = self._limits.properties_(properties)
        except ev.LimitExceeded as exc:
            return warn(f"add_properties() ignored: {exc}")
        sink = self._events()
        sink.sync()  # what came before is not refused with it
        self._emit(ev.PROPERTY, None, clean)
        try:
            sink.sync(strict=True)
        except Conflict:
            for key in clean:  # the service kept the old values
                self._limits.properties.pop(key, None)
            raise

    def get_properties(self) -> Dict[str, str]:
        return self._read(lambda: self._client.get_properties(self.id), lambda: {})

    # --- files ------------------------------------------------------------------------------

    def upload_file(self, name: str, path_or_stream: Union[str, os.PathLike, IO[bytes]]) -> None:
        """Store a file in the run record; listed by ``get_file_names()`` when this returns."""
        self._store(name, path_or_stream)
        self._events().sync()

    def _store(self, name: str, path_or_stream: Union[str, os.PathLike, IO[bytes]]) -> None:
        source = path_or_stream if hasattr(path_or_stream, "read") else os.fspath(path_or_stream)
        if isinstance(source, str) and not os.path.isfile(source):
            return warn(f"upload_file({name!r}) ignored: no file at {source}")
        try:
            self._events().store_file(self.id, name, source)  # type: ignore[arg-type]
        except Exception as exc:
            warn(f"upload_file({name!r}) not stored: {exc}")

    def upload_folder(self, name: str, path: Union[str, os.PathLike]) -> None:
        root = Path(path)
        if not root.is_dir():
            return warn(f"upload_folder({name!r}) ignored: no folder at {root}")
        self._store_folder(name, root)
        self._events().sync()

    def _store_folder(self, name: str, root: Path) -> None:
        for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            self._store(f"{name.rstrip('/')}/{file.relative_to(root).as_posix()}", str(file))

    def _collect_outputs(self, folder: str) -> None:
        """An interactive run's ``./outputs`` at its end, as a submitted run's are."""
        self._store_folder(contract.OUTPUTS_DIR, Path(folder))
        self._outputs = None

    def get_file_names(self) -> List[str]:
        return [f["name"] for f in self._client.list_files(self.id)]

    def download_file(
        self,
        name: str,
        output_file_path: Optional[Union[str, os.PathLike]] = None,
        _validate_checksum: bool = False,
    ) -> None:
        target = Path(output_file_path or Path(name).name)
        if target.is_dir():
            target = target / Path(name).name
        self._client.download_file(self.id, name, target)

    def download_files(
        self,
        prefix: Optional[str] = None,
        output_directory: Optional[Union[str, os.PathLike]] = None,
        output_paths: Optional[List[str]] = None,
        batch_size: int = 100,
        append_prefix: bool = True,
        timeout_seconds: Optional[int] = None,
    ) -> None:
        folder = Path(output_directory or ".")
        for name in self.get_file_names():
            if prefix and not name.startswith(prefix):
                continue
            relative = name if append_prefix or not prefix else name[len(prefix) :].lstrip("/")
            self._client.download_file(self.id, name, folder / relative)

    # --- metrics ----------------------------------------------------------------------------

    def get_metrics(
        self,
        name: Optional[str] = None,
        recursive: bool = False,
        run_type: Any = None,
        populate: bool = False,
    ) -> Dict[str, Any]:
        """As Azure: one value, a list, a dict of columns; keyed by run id if ``recursive``."""
        if run_type is not None:
            raise NotSupported("get_metrics(run_type=...) is not supported: runs have no type")
        data = self._read(
            lambda: self._client.get_metrics(self.id, name, recursive), lambda: {"runs": {}}
        )
        return (
            {rid: metrics_from(m) for rid, m in data["runs"].items()}
            if recursive
            else metrics_from(data["runs"].get(self.id, {}))
        )

    # --- lifecycle --------------------------------------------------------------------------

    def complete(self, _set_status: bool = True) -> None:
        """End the run Completed (interactive runs and child runs); stored on return."""
        if self._origin() == SUBMITTED:
            raise NotSupported(
                f"run {self.id} was submitted: it completes when its script exits; "
                "use cancel() or fail() to end it sooner"
            )
        self._finish(RunStatus.COMPLETED, None)

    def fail(
        self, error_details: Any = None, error_code: Any = None, _set_status: bool = True
    ) -> None:
        """End the run Failed with ``error_details`` as its reason; a submitted run's
        process is stopped. Failed when this returns."""
        origin = self._origin()
        if origin == SUBMITTED:
            reason = str(error_details) if error_details else "failed by request"
            self._details = self._client.fail(self.id, reason)
            return
        self._finish(RunStatus.FAILED, str(error_details) if error_details else "failed by script")

    def cancel(self) -> None:
        origin = self._origin()
        if origin == OFFLINE:
            return
        if origin in (CHILD, INTERACTIVE):
            self._finish(RunStatus.CANCELED, "canceled by request")
        else:
            self._details = self._client.cancel(self.id)

    def _finish(self, status: RunStatus, error: Optional[str]) -> None:
        if self._outputs is not None and os.path.isdir(self._outputs):
            self._collect_outputs(self._outputs)
        event: Dict[str, Any] = {"r": self.id, "k": ev.STATUS, "v": status.value, "t": time.time()}
        if error:
            event["e"] = error
        sink = self._events()
        sink.emit(event)
        sink.sync()
        if self._origin() == INTERACTIVE:
            sink.close()  # the root of an interactive run: nothing more will be logged

    def _origin(self) -> str:
        """How this run came to be, which decides how it ends (the constants at the top)."""
        if isinstance(self._sink, OfflineSink):
            return OFFLINE
        if self._parent is not None:
            return CHILD
        if isinstance(self._sink, ChannelSink):
            return CONTEXT
        details = self._details or self._refresh()
        if details.get("snapshot_digest"):
            return SUBMITTED
        return CHILD if details.get("parent_run_id") else INTERACTIVE

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.complete()
        else:
            self.fail(error_details=f"{exc_type.__name__}: {exc}")

    # --- children ---------------------------------------------------------------------------

    def child_run(
        self, name: Optional[str] = None, run_id: Optional[str] = None, outputs: Any = None
    ) -> Run:
        """A child run, Running at once, logging through this run's channel."""
        with self._lock:
            self._children += 1
            number = self._children
        child = ev.child_id(self.id, number)
        sink = self._events()
        sink.emit({"r": self.id, "k": ev.CHILD, "c": child, "n": name or child, "t": time.time()})
        return Run(
            self.experiment,
            child,
            _sink=sink,
            _parent=self,
            _details={"id": child, "parent_run_id": self.id, "display_name": name},
        )

    def create_children(
        self,
        count: Optional[int] = None,
        tag_key: Optional[str] = None,
        tag_values: Optional[List[str]] = None,
    ) -> List[Run]:
        if count is None:
            count = len(tag_values or [])
        children = [self.child_run() for _ in range(count)]
        if tag_key and tag_values:
            for child, value in zip(children, tag_values):
                child.tag(tag_key, value)
        return children

    def get_children(
        self,
        recursive: bool = False,
        tags: Any = None,
        properties: Any = None,
        type: Any = None,
        status: Any = None,
    ) -> Iterator[Run]:
        """The run's children in the order they were made (with ``recursive``, each
        followed by its own), filtered as ``Experiment.get_runs`` filters."""
        if isinstance(self._sink, OfflineSink):
            return
        self._read(lambda: None, lambda: None)  # every child_run() made so far is listed
        filters = run_filters(tags, properties, type, status)
        for data in self._client.iter_runs(parent=self.id, **filters):
            child = Run(self.experiment, data["id"], _details=data)
            yield child
            if recursive:
                yield from child.get_children(True, tags, properties, type, status)

    @property
    def parent(self) -> Optional[Run]:
        if self._parent is not None:
            return self._parent
        parent_id = (self._details or self._refresh()).get("parent_run_id")
        return Run(self.experiment, parent_id) if parent_id else None

    # --- state ------------------------------------------------------------------------------

    def _refresh(self) -> Dict[str, Any]:
        self._details = self._client.get_run(self.id)
        return self._details

    def _read(self, online: Any, offline: Any) -> Any:
        """Read after everything this process logged is stored (Azure reads its writes)."""
        if isinstance(self._sink, OfflineSink):
            return offline()
        if self._sink is not None:
            self._sink.sync()
        return online()

    @property
    def status(self) -> str:
        return self.get_status()

    @property
    def attempt(self) -> int:
        """Which attempt of the run this is: 1, then 2 and on after the run was requeued
        (preempted, or its node lost). An offline run is on its first."""
        if self._attempt is not None:
            return self._attempt
        if isinstance(self._sink, OfflineSink):
            return 1
        return int((self._details or self._refresh()).get("attempt") or 1)

    @property
    def previous_attempt_preempted(self) -> bool:
        """Whether the attempt before this one was preempted: its ./outputs and
        ./checkpoints are back in the working folder, for a training loop to resume from."""
        if self._previous_preempted is not None:
            return self._previous_preempted
        if isinstance(self._sink, OfflineSink):
            return False
        return bool((self._details or self._refresh()).get("previous_attempt_preempted"))

    @property
    def display_name(self) -> str:
        details = self._details or self._refresh()
        return details.get("display_name") or self.id

    @display_name.setter
    def display_name(self, value: str) -> None:
        """Rename the run (what the Studio and ``runyard runs`` show); stored when this
        returns, from a notebook and from inside the run alike."""
        text = str(value).strip()
        if not 0 < len(text) <= ev.MAX_DISPLAY_NAME:
            raise InvalidInput(
                f"a display name has 1 to {ev.MAX_DISPLAY_NAME} characters, not {len(text)}"
            )
        sink = self._events()
        sink.sync()  # what came before is not refused with it
        self._emit(ev.NAME, None, text)
        sink.sync(strict=True)  # a refused rename raises: the name read next is the stored one
        if self._details is not None:
            self._details["display_name"] = text

    @property
    def tags(self) -> Dict[str, str]:
        return self.get_tags()

    @property
    def properties(self) -> Dict[str, str]:
        return self.get_properties()

    def get_status(self) -> str:
        return self._refresh()["status"]

    def get_details(self) -> Dict[str, Any]:
        return details_from(self._refresh())

    def get_details_with_logs(self) -> Dict[str, Any]:
        details = self.get_details()
        details["logFiles"] = {STD_LOG: self._client.logs(self.id)}
        return details

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
    ) -> Dict[str, Any]:
        """Block until the run ends, and everything it logged, printed and wrote to
        ``./outputs`` is stored; with ``show_output`` stream its log meanwhile."""
        if show_output:
            print(f"RunId: {self.id}")
            print(f"Web View: {self.get_portal_url()}\n")
            print(f"Streaming {STD_LOG}")
            print("=" * 40 + "\n", flush=True)
        write = sys.stdout.write if show_output else None
        self._details = follow_to_end(self._client, self.id, write)
        details = details_from(self._details)
        if show_output:
            print("\nExecution Summary\n" + "=" * 17)
            print(f"RunId: {self.id}\nStatus: {details['status']}\n", flush=True)
        if raise_on_error and details["status"] != RunStatus.COMPLETED.value:
            reason = (details.get("error") or {}).get("message") or details["status"]
            raise RunFailed(f"run {self.id} ended {details['status']}: {reason}")
        return details

    def get_portal_url(self) -> str:
        return f"{self.experiment.workspace.url}/runs/{self.id}"

    def restore_snapshot(
        self, snapshot_id: Optional[str] = None, path: Optional[Union[str, os.PathLike]] = None
    ) -> str:
        """The run's snapshot (or the one named) as a ZIP file in ``path``, as Azure gives
        it; returns the ZIP's path."""
        if snapshot_id is None:
            snapshot_id = (self._details or self._refresh()).get("snapshot_digest")
            if not snapshot_id:
                raise InvalidInput(f"run {self.id} has no snapshot (it was not submitted)")
        folder = Path(path or ".")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{snapshot_id.split(':', 1)[-1]}.zip"
        with tempfile.TemporaryDirectory() as scratch:
            archive = Path(scratch) / "snapshot.tar.gz"
            self._client.download_snapshot(snapshot_id, archive)
            partial = target.with_name(target.name + ".partial")
            with (
                tarfile.open(archive, "r:gz") as tar,
                zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out,
            ):
                for member in tar:
                    source = tar.extractfile(member) if member.isfile() else None
                    if source is not None:
                        name = member.name[2:] if member.name.startswith("./") else member.name
                        with source, out.open(name, "w") as copy:
                            shutil.copyfileobj(source, copy)
            os.replace(partial, target)
        return str(target)

    def submit_child(
        self, config: Any, tags: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> Run:
        """Submit ``config`` (a ScriptRunConfig) as a child of this run; it queues on its
        own cluster and ends with its own script."""
        return self.experiment.submit(config, tags=tags, _parent_run_id=self.id, **kwargs)

    def register_model(self, model_name: str, model_path: Optional[str] = None, **_: Any) -> Any:
        raise NotSupported(
            "register_model() is not supported: Runyard has no model registry; upload the "
            "model with upload_file() and fetch it with download_file()"
        )

    def _repr_html_(self) -> str:
        details = self._details or {}
        link = html.escape(self.get_portal_url(), quote=True)
        cells = [
            html.escape(self.experiment.name),
            html.escape(self.id),
            html.escape(str(details.get("status", ""))),
            f'<a href="{link}" target="_blank" rel="noopener">Link to Runyard Studio</a>',
        ]
        head = "".join(f"<th>{h}</th>" for h in ("Experiment", "Id", "Status", "Details Page"))
        row = "".join(f"<td>{c}</td>" for c in cells)
        return f"<table><tr>{head}</tr><tr>{row}</tr></table>"

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment.name!r}, id={self.id!r})"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100] or "image"
