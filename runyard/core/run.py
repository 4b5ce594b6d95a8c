"""``Run``: one execution of a script, fetched by id or returned by ``Experiment.submit``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.errors import RunFailed
from runyard.status import RunStatus

if TYPE_CHECKING:
    from runyard.core.experiment import Experiment

POLL_INTERVAL = 1.0


class Run:
    def __init__(self, experiment: Experiment, run_id: str, **kwargs: Any) -> None:
        self.experiment = experiment
        self.id = run_id
        self._details: dict[str, Any] | None = kwargs.get("_details")

    # --- state ------------------------------------------------------------------------------

    @property
    def _client(self):  # type: ignore[no-untyped-def]
        return self.experiment.workspace.client

    def _refresh(self) -> dict[str, Any]:
        self._details = self._client.get_run(self.id)
        return self._details

    @property
    def status(self) -> str:
        return self.get_status()

    @property
    def display_name(self) -> str:
        details = self._details or self._refresh()
        return details.get("display_name") or self.id

    def get_status(self) -> str:
        return self._refresh()["status"]

    def get_details(self) -> dict[str, Any]:
        data = self._refresh()
        return details_from(data)

    def get_details_with_logs(self) -> dict[str, Any]:
        details = self.get_details()
        details["logFiles"] = {"user_logs/std_log.txt": self._client.logs(self.id)}
        return details

    # --- waiting and output -----------------------------------------------------------------

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        """Block until the run ends; with ``show_output`` stream its log meanwhile."""
        if show_output:
            print(f"RunId: {self.id}")
            print(f"Web View: {self.get_portal_url()}\n")
            print("Streaming user_logs/std_log.txt")
            print("=" * 40 + "\n", flush=True)
            for text in self._client.follow_logs(self.id):
                sys.stdout.write(text)
                sys.stdout.flush()
        while not RunStatus(self.get_status()).is_terminal:
            time.sleep(POLL_INTERVAL)
        details = self.get_details()
        if show_output:
            print("\nExecution Summary\n" + "=" * 17)
            print(f"RunId: {self.id}\nStatus: {details['status']}\n", flush=True)
        if raise_on_error and details["status"] != RunStatus.COMPLETED.value:
            reason = (details.get("error") or {}).get("message") or details["status"]
            raise RunFailed(f"run {self.id} ended {details['status']}: {reason}")
        return details

    def cancel(self) -> None:
        self._details = self._client.cancel(self.id)

    def get_portal_url(self) -> str:
        return f"{self.experiment.workspace.url}/runs/{self.id}"

    # --- files and snapshot -----------------------------------------------------------------

    def get_file_names(self) -> list[str]:
        return [f["name"] for f in self._client.list_files(self.id)]

    def download_file(
        self,
        name: str,
        output_file_path: str | os.PathLike[str] | None = None,
        _validate_checksum: bool = False,
    ) -> None:
        target = Path(output_file_path or Path(name).name)
        if target.is_dir():
            target = target / Path(name).name
        self._client.download_file(self.id, name, target)

    def restore_snapshot(
        self, snapshot_id: str | None = None, path: str | os.PathLike[str] | None = None
    ) -> str:
        """Download the run's snapshot; returns the archive's path (a .tar.gz)."""
        folder = Path(path or ".")
        target = folder / f"{self.id}-snapshot.tar.gz"
        if snapshot_id:
            self._client.download_snapshot(snapshot_id, target)
        else:
            self._client.download_run_snapshot(self.id, target)
        return str(target)

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment.name!r}, id={self.id!r})"


def details_from(data: dict[str, Any]) -> dict[str, Any]:
    """The Azure ``get_details()`` shape, with Runyard's queue fields added."""
    details: dict[str, Any] = {
        "runId": data["id"],
        "experiment": data.get("experiment"),
        "target": data.get("cluster"),
        "status": data["status"],
        "submittedTimeUtc": data.get("created_at"),
        "startTimeUtc": data.get("running_at") or data.get("starting_at"),
        "endTimeUtc": data.get("ended_at"),
        "runDefinition": {
            "script": data.get("script"),
            "arguments": data.get("arguments") or [],
            "environment": data.get("environment") or {},
            "priority": data.get("priority", 0),
        },
        "properties": {"snapshotId": data.get("snapshot_digest")},
        "exitCode": data.get("exit_code"),
        "worker": data.get("worker_id"),
    }
    if data.get("position") is not None or data.get("pending_reason"):
        details["queuePosition"] = data.get("position")
        details["pendingReason"] = data.get("pending_reason")
    if data.get("failure_reason"):
        details["error"] = {"message": data["failure_reason"]}
    return details
