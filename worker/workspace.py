"""Per-run working directories, made from snapshots cached per digest on the worker."""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard import snapshot
from runyard.client import Client
from worker.run_folder import UnsafeEntry, open_folder, open_regular


@dataclass(frozen=True)
class Leftover:
    run_id: str
    executor: str
    handle: str
    attempt: int
    requeue: bool


class Workspace:
    """``<root>/snapshots/<hex>/`` holds each unpacked snapshot once. Each run gets
    ``<root>/runs/<id>/``: ``workdir/`` (a private copy of the snapshot, so a run can never
    change the stored one), ``tracking/`` (its channel) and ``handle`` (how to find its
    process again)."""

    def __init__(self, root: Path, api: Client) -> None:
        self.root = root
        self.api = api
        self.cache = root / "snapshots"
        self.runs = root / "runs"
        self._lock = threading.Lock()
        self.cache.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)

    def unpacked(self, digest: str) -> Path:
        name = digest.split(":", 1)[-1]
        if not name.isalnum():
            raise ValueError(f"bad snapshot digest {digest!r}")
        target = self.cache / name
        with self._lock:
            if target.is_dir():
                return target
            archive = self.cache / f"{name}.tar.gz"
            self.api.download_snapshot(digest, archive)
            try:
                data = archive.read_bytes()
                if snapshot.digest_of(data) != digest:
                    raise ValueError(f"snapshot {digest} arrived corrupted")
                staging = self.cache / f"{name}.partial"
                shutil.rmtree(staging, ignore_errors=True)
                snapshot.extract(data, staging, snapshot.SnapshotLimits(2**62, 2**62))
                os.replace(staging, target)
            finally:
                archive.unlink(missing_ok=True)
            return target

    def prepare(self, run_id: str, digest: str | None) -> Path:
        """A fresh working directory for the run (returned) and an empty tracking channel."""
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        workdir = self.workdir(run_id)
        if digest:
            shutil.copytree(self.unpacked(digest), workdir, symlinks=True)
        else:
            workdir.mkdir(parents=True)
        self.tracking_dir(run_id).mkdir()
        return workdir

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def workdir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "workdir"

    def tracking_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "tracking"

    def remember(self, run_id: str, executor: str, handle: str, assignment: Any) -> None:
        """Note how to find the run's process again, should this worker be killed."""
        note = {
            "executor": executor,
            "handle": handle,
            "attempt": assignment.attempt,
            "requeue": assignment.requeue_on_node_loss,
        }
        (self.run_dir(run_id) / "handle.json").write_text(json.dumps(note))

    def leftovers(self) -> list[Leftover]:
        """Runs a previous life of this worker left behind."""
        found = []
        for path in sorted(p for p in self.runs.iterdir() if p.is_dir() and not p.is_symlink()):
            note = _read_note(path)
            found.append(
                Leftover(
                    path.name,
                    note.get("executor", ""),
                    note.get("handle", ""),
                    int(note.get("attempt", 0)),
                    bool(note.get("requeue")),
                )
            )
        return found

    def discard(self, run_id: str) -> None:
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)


def _read_note(run_dir: Path) -> dict[str, Any]:
    """``handle.json``, read as the worker reads anything in a run's folder: no link, no
    FIFO, a bounded size; a note that is not one is no note."""
    try:
        folder = open_folder(run_dir)
    except UnsafeEntry:
        return {}
    try:
        with open_regular(folder, "handle.json") as note:
            data = json.loads(note.read(64 * 1024))
    except (UnsafeEntry, ValueError):
        return {}
    finally:
        os.close(folder)
    return data if isinstance(data, dict) else {}
