"""One build for many runs, and environments in use kept from eviction.

- ``host_lock``: an exclusive ``flock`` on a file in the cache: the runs of this host (two
  slots of a worker, two workers sharing the cache) that need one missing environment wait
  for one build. A crashed builder's lock goes with its process; a starting worker removes
  the staging folders of builds whose lock is free (``sweep_staging``).
- ``cluster_lock``: a Redis lock for what several hosts share (a Docker engine, a
  registry), with a short TTL its holder renews while it builds, so a crashed builder's
  lock frees within a minute.
Waits for either end at the build's deadline or when its run is canceled.
- ``Pin``: a shared ``flock`` each run holds on its environment from Preparing until its
  cleanup; eviction takes it exclusive without waiting, and skips the environment when it
  cannot. ``flock`` (not ``lockf``): locks of one process's threads conflict as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocol import keys
from worker.environments.build_log import Deadline

log = logging.getLogger(__name__)

LOCK_TTL = 60.0  # seconds a cluster lock outlives its holder's last renewal


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def host_lock(path: Path, deadline: Deadline) -> Iterator[None]:
    """Held while this host builds the environment ``path`` names; waited for until the
    deadline, or until the run is canceled."""
    fd = _open(path)
    try:
        late = (
            f"environment {path.name} is being built by another run here, and that build "
            f"did not end within {deadline.seconds:g} s"
        )
        while not _took(fd, fcntl.LOCK_EX | fcntl.LOCK_NB):
            deadline.check(late)
            time.sleep(min(deadline.pause(), 0.1))
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _took(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        return False
    return True


def is_free(path: Path) -> bool:
    """No build holds this host lock now (a build that died released it)."""
    fd = _open(path)
    try:
        return _took(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


@contextlib.contextmanager
def cluster_lock(
    redis: Any, scope: str, build_hash: str, deadline: Deadline, ttl: float = LOCK_TTL
) -> Iterator[None]:
    """Held by whoever builds ``build_hash`` within ``scope``; no Redis: nothing to share.
    Its key lives ``ttl`` seconds past its holder's last renewal (every third of it)."""
    if redis is None:
        yield
        return
    lock = redis.lock(keys.environment_build(scope, build_hash), timeout=ttl, thread_local=False)
    late = (
        f"environment {build_hash} is being built elsewhere and that build did not end "
        f"within {deadline.seconds:g} s"
    )
    while not lock.acquire(blocking_timeout=max(deadline.pause(), 0.01)):
        deadline.check(late)
    held = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(lock, ttl, held), name=f"renew-{build_hash[:8]}", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:
        held.set()
        renewer.join()
        with contextlib.suppress(Exception):  # expired: someone else's by now
            lock.release()


def _renew(lock: Any, ttl: float, done: threading.Event) -> None:
    """Resets the lock's TTL every third of it while its build goes on."""
    while not done.wait(ttl / 3):
        try:
            lock.reacquire()
        except Exception as exc:  # lost (Redis was away longer than the TTL): say so
            log.warning("the build lock %s could not be renewed: %s", lock.name, exc)


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
