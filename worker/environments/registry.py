"""Sharing built environment images between the workers of a cluster through its image
registry (``ContainerPolicy.registry``): the worker that built ``runyard-env:<hash>`` pushes
it, the others pull it instead of building it again.

An image is only ever known locally by its cache name ``runyard-env:<hash>``: the
registry-qualified name is a transfer name, removed once the transfer is done, so evicting
an environment from the cache frees its layers. The engine talks to the registry, not the
worker: an engine that refuses a plain-HTTP registry must list it in its
``insecure-registries``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, NotFound

from runyard.errors import ExecutionFailed
from worker.environments.build_log import Deadline
from worker.environments.engine import cut_at

REPOSITORY = "runyard-env"

# What the engine says when the registry is reachable but has no such image (the tag was
# never pushed, or the repository holds nothing yet).
_ABSENT = ("manifest unknown", "not found", "name unknown", "repository does not exist")
# What the engine says when it speaks HTTPS to a registry that serves plain HTTP.
_PLAIN_HTTP = "server gave http response to https client"


def local_name(digest: str) -> str:
    """The cache's name of a build: ``runyard-env:<hash>``."""
    return f"{REPOSITORY}:{digest}"


def remote_name(registry: str, digest: str) -> str:
    """The build's name in a registry: ``<registry>/runyard-env:<hash>``."""
    return f"{registry.rstrip('/')}/{REPOSITORY}:{digest}"


@dataclass
class _Transfer:
    """Layer counts and sizes of one push or pull, read from the engine's progress stream,
    so the run's log gets a line per finished layer and a summary, not every chunk."""

    verb: str  # "sent" or "received"
    note: Callable[[str], None]
    sizes: dict[str, int] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)  # layer id -> how it ended
    digest: str = ""

    def read(self, line: dict) -> str | None:
        """Takes one progress line; returns the engine's error message if it is one."""
        if "error" in line or "errorDetail" in line:
            detail = line.get("errorDetail") or {}
            return str(line.get("error") or detail.get("message") or line)
        layer, status = str(line.get("id") or ""), str(line.get("status") or "")
        total = (line.get("progressDetail") or {}).get("total")
        if layer and isinstance(total, int) and total > 0:
            self.sizes[layer] = max(total, self.sizes.get(layer, 0))
        aux = line.get("aux") or {}
        if isinstance(aux, dict) and aux.get("Digest"):
            self.digest = str(aux["Digest"])
        if status.startswith("Digest: "):
            self.digest = status.removeprefix("Digest: ")
        finished = {
            "Pushed": "sent",
            "Layer already exists": "already there",
            "Pull complete": "received",
            "Already exists": "already here",
        }
        if layer and status in finished and layer not in self.done:
            self.done[layer] = finished[status]
            size = f", {_mib(self.sizes[layer])}" if layer in self.sizes else ""
            self.note(f"layer {layer}: {finished[status]}{size} ({len(self.done)} done)")
        return None

    def summary(self) -> str:
        moved = [layer for layer, how in self.done.items() if how in ("sent", "received")]
        size = sum(self.sizes.get(layer, 0) for layer in moved)
        kept = len(self.done) - len(moved)
        digest = f", {self.digest}" if self.digest else ""
        return f"{len(moved)} layer(s) {self.verb} ({_mib(size)}), {kept} already present{digest}"


def _mib(size: int) -> str:
    if size < 1024**2:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024**2:.1f} MiB"


def _follow(stream: Iterable[dict], transfer: _Transfer) -> str | None:
    """Reads the engine's progress stream to its end; the first error it reported, if any."""
    error = None
    for line in stream:
        error = error or transfer.read(line)
    return error


def _is_absent(message: str) -> bool:
    return any(words in message.lower() for words in _ABSENT)


def _unreachable(registry: str, action: str, message: str) -> ExecutionFailed:
    hint = ""
    if _PLAIN_HTTP in message.lower():
        hint = f" (plain HTTP: add {registry} to the engine's insecure-registries)"
    return ExecutionFailed(f"cannot {action} image registry {registry}: {message.strip()}{hint}")


@contextlib.contextmanager
def _api(engine: docker.DockerClient, deadline: Deadline | None) -> Iterator[Any]:
    """The engine's API client; with a deadline, one it cuts (a transfer that hangs, or a
    run canceled meanwhile, ends with the deadline's reason)."""
    if deadline is None:
        yield engine.api
        return
    with cut_at(engine, deadline) as api:
        yield api


def pull(
    engine: docker.DockerClient,
    registry: str,
    digest: str,
    note: Callable[[str], None],
    deadline: Deadline | None = None,
) -> bool:
    """Fetches the build ``digest`` from ``registry`` and names it ``runyard-env:<hash>``.
    True when it is now local; False when the registry does not have it (the caller builds
    it); ExecutionFailed when the registry cannot be reached or refuses the engine, or the
    deadline's reason when it is reached first."""
    remote = remote_name(registry, digest)
    repository, tag = remote.rsplit(":", 1)
    note(f"Pulling {remote}")
    started = time.monotonic()
    transfer = _Transfer("received", note)
    try:
        with _api(engine, deadline) as api:
            error = _follow(api.pull(repository, tag=tag, stream=True, decode=True), transfer)
    except APIError as exc:  # refused before any progress: 404 when absent
        error = str(exc.explanation or exc)
    if error is not None:
        if _is_absent(error):
            note(f"{remote}: not in the registry")
            return False
        raise _unreachable(registry, "pull from", error)
    engine.images.get(remote).tag(REPOSITORY, digest)
    _forget(engine, remote)
    seconds = time.monotonic() - started
    note(f"Pulled {local_name(digest)} from {registry} in {seconds:.1f} s: {transfer.summary()}")
    return True


def push(
    engine: docker.DockerClient,
    registry: str,
    digest: str,
    note: Callable[[str], None],
    deadline: Deadline | None = None,
) -> None:
    """Sends the local build ``runyard-env:<hash>`` to ``registry`` for the cluster's other
    workers; ExecutionFailed when the registry cannot be reached or refuses it, or the
    deadline's reason when it is reached first."""
    remote = remote_name(registry, digest)
    repository, tag = remote.rsplit(":", 1)
    note(f"Pushing {local_name(digest)} to {registry}")
    started = time.monotonic()
    transfer = _Transfer("sent", note)
    engine.images.get(local_name(digest)).tag(repository, tag)
    try:
        with _api(engine, deadline) as api:
            error = _follow(api.push(repository, tag=tag, stream=True, decode=True), transfer)
    except APIError as exc:
        error = str(exc.explanation or exc)
    finally:
        _forget(engine, remote)
    if error is not None:
        raise _unreachable(registry, "push to", error)
    seconds = time.monotonic() - started
    note(f"Pushed {remote} in {seconds:.1f} s: {transfer.summary()}")


def _forget(engine: docker.DockerClient, name: str) -> None:
    """Removes a transfer name; the image stays under its cache name."""
    with contextlib.suppress(NotFound, APIError):
        engine.images.remove(name, noprune=True)
