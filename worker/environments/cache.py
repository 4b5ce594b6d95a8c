"""The worker's cache of built environments: a record per build hash (what it holds, its
size, when it was last used), and least-recently-used eviction past the size limit that
never takes an environment a live run holds (``locks.Pin``).

Layout under RUNYARD_ENV_CACHE_DIR: ``venvs/<hash>/`` (local builds), ``records/<hash>.json``
(its mtime is the last use: a hit only touches it), ``pins/<hash>``, ``locks/<hash>``,
``staging/`` (builds in progress, each removed by its build however it ends; a worker that
starts removes those whose build died with its worker: ``sweep_staging``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.environments.locks import Pin, is_free, unless_pinned

MIB = 1024 * 1024
# Removes the environment a record describes; False when it cannot go now (in use).
Remover = Callable[[dict[str, Any]], bool]
# A staging folder's name: its build's hash first (an evicted venv's: "trash-<hash>").
_STAGED = re.compile(r"(?P<trash>trash-)?(?P<hash>[0-9a-f]{32})-")


@dataclass(frozen=True)
class Evicted:
    hash: str
    kind: str
    size_bytes: int


class EnvironmentCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        for folder in (root, root / "venvs"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)  # the runs' user reaches its venv through these

    def venv(self, build_hash: str) -> Path:
        return self.root / "venvs" / build_hash

    def staging(self, build_hash: str) -> Path:
        """A fresh folder for one build, next to where it lands (a rename is atomic)."""
        folder = self.root / "staging" / f"{build_hash}-{os.getpid()}-{time.monotonic_ns()}"
        folder.mkdir(parents=True)
        folder.chmod(0o755)
        return folder

    def lock_path(self, build_hash: str) -> Path:
        return self.root / "locks" / build_hash

    def sweep_staging(self) -> list[str]:
        """Staging folders whose build is over (its worker died in it): the build's host
        lock (an evicted venv's: its pin) is free. Their names, removed."""
        removed = []
        for folder in sorted((self.root / "staging").glob("*")):
            staged = _STAGED.match(folder.name)
            if staged is None:
                continue
            holder = "pins" if staged["trash"] else "locks"
            if is_free(self.root / holder / staged["hash"]):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed

    def pin(self, build_hash: str) -> Pin:
        return Pin(self.root / "pins" / build_hash)

    def _record_path(self, build_hash: str) -> Path:
        return self.root / "records" / f"{build_hash}.json"

    def record(self, build_hash: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._record_path(build_hash).read_text())
        except (OSError, ValueError):
            return None

    def write_record(self, build_hash: str, record: dict[str, Any]) -> None:
        path = self._record_path(build_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
        draft.write_text(json.dumps(record, sort_keys=True))
        os.replace(draft, path)

    def forget(self, build_hash: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._record_path(build_hash).unlink()

    def used(self, build_hash: str) -> None:
        """Mark it used now (what LRU eviction orders by)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._record_path(build_hash))

    def records(self) -> list[tuple[float, dict[str, Any]]]:
        """(last use, record) of every cached environment, least recently used first."""
        found = []
        for path in (self.root / "records").glob("*.json"):
            try:
                found.append((path.stat().st_mtime, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda item: item[0])

    def size_bytes(self) -> int:
        return sum(int(r.get("size_bytes") or 0) for _, r in self.records())

    def evict(
        self,
        max_bytes: int | None,
        removers: dict[str, Remover],
        all_unused: bool = False,
    ) -> list[Evicted]:
        """Remove least recently used environments until the cache fits ``max_bytes``
        (or every one no run holds, with ``all_unused``); pinned ones are skipped, as are
        kinds without a remover here."""
        evicted: list[Evicted] = []
        total = self.size_bytes()
        for _, record in self.records():
            if not all_unused and (max_bytes is None or total <= max_bytes):
                break
            build_hash, kind = record["hash"], record.get("kind", "")
            remove = removers.get(kind)
            if remove is None:
                continue
            with unless_pinned(self.root / "pins" / build_hash) as free:
                if not free or not remove(record):
                    continue
                self.forget(build_hash)
            size = int(record.get("size_bytes") or 0)
            total -= size
            evicted.append(Evicted(build_hash, kind, size))
        return evicted

    def remove_venv(self, record: dict[str, Any]) -> bool:
        """A venv goes out of sight at once (a rename), then its files."""
        folder = self.venv(record["hash"])
        if folder.exists():
            trash = self.staging(f"trash-{record['hash']}")
            os.replace(folder, trash / "venv")
            shutil.rmtree(trash, ignore_errors=True)
        return True


def folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
