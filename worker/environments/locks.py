"""One build for many runs, and environments in use kept from eviction.

- ``host_lock``: an exclusive ``flock`` on a file in the cache: the runs of this host (two
  slots of a worker, two workers sharing the cache) that need one missing environment wait
  for one build.
- ``cluster_lock``: a Redis lock for what several hosts share (a Docker engine, a
  registry), held longer than a build may take, so a crashed builder frees it.
- ``Pin``: a shared ``flock`` each run holds on its environment from Preparing until its
  cleanup; eviction takes it exclusive without waiting, and skips the environment when it
  cannot. ``flock`` (not ``lockf``): locks of one process's threads conflict as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocol import keys
from runyard.errors import ExecutionFailed

LOCK_MARGIN = 300.0  # seconds a cluster lock outlives the longest build


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def host_lock(path: Path) -> Iterator[None]:
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def cluster_lock(redis: Any, scope: str, build_hash: str, build_timeout: float) -> Iterator[None]:
    """Held by whoever builds ``build_hash`` within ``scope``; no Redis: nothing to share."""
    if redis is None:
        yield
        return
    lock = redis.lock(
        keys.environment_build(scope, build_hash),
        timeout=build_timeout + LOCK_MARGIN,
        blocking_timeout=build_timeout + LOCK_MARGIN,
        thread_local=False,
    )
    if not lock.acquire():
        raise ExecutionFailed(
            f"environment {build_hash} is being built elsewhere and that build did not end "
            f"within {build_timeout + LOCK_MARGIN:g} s"
        )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # expired: someone else's by now
            lock.release()


class Pin:
    """A run's hold on an environment: while held, eviction leaves the environment alone."""

    def __init__(self, path: Path) -> None:
        self.fd: int | None = _open(path)
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def unless_pinned(path: Path) -> Iterator[bool]:
    """True (and the pin file held exclusively) when no run holds the environment."""
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
