"""The Docker executor: each run in its own hardened container.

The run's working directory is mounted at /workspace, its tracking channel at
/runyard/tracking and the Runyard SDK (read-only) at /runyard/sdk on PYTHONPATH, so any
image with Python 3.9+ can `from runyard.core import Run` without installing anything.
Nothing else of the host is mounted, never the Docker socket. Confinement comes from the
cluster's ContainerPolicy: non-root, no capabilities, no new privileges, read-only root
with a /tmp tmpfs, memory / CPU / pids limits, the cluster's network mode, and GPUs only
as named device ids of the worker slot.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, Mount

from protocol import dockerfiles, environments
from protocol.build_specs import BuildSpec, build_spec
from protocol.environments import NO_IMAGE, ContainerPolicy, image_of
from runyard.errors import BadRequirement
from runyard.tracking import contract
from worker.environments.build_log import BuildLog
from worker.environments.config import config_of
from worker.environments.used import Built, environment_used
from worker.executors.base import (
    Execution,
    ExecutionFailed,
    ExecutionRequest,
    Executor,
    ExecutorUnavailable,
    hand_over,
)

log = logging.getLogger(__name__)

WORKSPACE = "/workspace"
TRACKING = "/runyard/tracking"
SDK = "/runyard/sdk"
LABEL_RUN = "runyard.run"
LABEL_WORKER = "runyard.worker"
LABEL_SERVICE = "runyard.service"
ENV_PATH = "/opt/runyard/env"  # a built environment's packages (worker.environments.images)


def client() -> docker.DockerClient:
    try:
        engine = docker.from_env(timeout=120)
        engine.ping()
    except DockerException as exc:
        raise ExecutorUnavailable(f"no Docker engine reachable from this worker: {exc}") from exc
    return engine


def image_for(request: ExecutionRequest, policy: ContainerPolicy) -> str:
    """Refused at submit when there is none; the cluster may have changed since."""
    image = image_of(request.environment, {"image": policy.image})
    if not image:
        raise ExecutionFailed(NO_IMAGE)
    return image


def device_requests(gpu_ids: list[str], policy: ContainerPolicy) -> list[DeviceRequest]:
    """GPUs by id, from the worker slot; never "all" by accident."""
    if policy.gpus_per_run == 0:
        return []
    if len(gpu_ids) < policy.gpus_per_run:
        raise ExecutionFailed(
            f"the cluster asks for {policy.gpus_per_run} GPU(s) per run; this worker slot has "
            f"{len(gpu_ids)} ({', '.join(gpu_ids) or 'none'})"
        )
    chosen = [str(g) for g in gpu_ids[: policy.gpus_per_run]]
    return [DeviceRequest(driver="nvidia", device_ids=chosen, capabilities=[["gpu"]])]


# Tried in order in an image when the run names no interpreter (Debian's images have no
# ``python``; many others have both).
DEFAULT_INTERPRETERS = ("python3", "python")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# (image id, candidates) -> the interpreter found: image ids name their content.
_found_interpreters: dict[tuple[str, tuple[str, ...]], str | None] = {}


def interpreter_in_image(engine: docker.DockerClient, image: str, environment: dict) -> str:
    """The run's ``python.interpreter_path`` (else ``python3``, then ``python``) as found in
    the image, looked up on its PATH without running anything; a run whose interpreter is
    missing fails here, in Preparing, with the reason."""
    given = (environment.get("python") or {}).get("interpreter_path")
    candidates = (given,) if given else DEFAULT_INTERPRETERS
    found_image = engine.images.get(image)
    key = (found_image.id, candidates)
    if key not in _found_interpreters:
        _found_interpreters[key] = _look_up(engine, found_image, candidates)
    found = _found_interpreters[key]
    if found is None:
        named = " or ".join(repr(c) for c in candidates)
        raise ExecutionFailed(
            f"interpreter {named} not found in image {image}; set "
            "environment.python.interpreter_path"
        )
    return found


def _look_up(engine: docker.DockerClient, image: Any, candidates: tuple[str, ...]) -> str | None:
    declared = (image.attrs.get("Config") or {}).get("Env") or []
    variables = dict(item.split("=", 1) for item in declared if "=" in item)
    folders = variables.get("PATH", DEFAULT_PATH).split(":")
    probe = engine.containers.create(image.id, command=["/nonexistent"], network_disabled=True)
    try:
        for name in candidates:
            paths = [name] if "/" in name else [f"{d.rstrip('/')}/{name}" for d in folders if d]
            for path in paths:
                # HEAD of the archive endpoint: the file's stat, without its content (the
                # SDK's get_archive would stream the whole interpreter binary).
                url = engine.api._url("/containers/{0}/archive", probe.id)
                if engine.api.head(url, params={"path": path}).status_code == 200:
                    return path
    finally:
        with contextlib.suppress(NotFound, APIError):
            probe.remove(force=True)
    return None


# The container's command starts here: the script's stderr becomes its stdout, then the
# script runs in its place (same process). The engine reads a container's stdout and stderr
# from two pipes in two goroutines and interleaves them out of order; one pipe keeps the
# order the script wrote in, as the local executor's (stderr=STDOUT) does. Pure Python, so
# an image needs no shell.
MERGE_STDERR = "import os, sys; os.dup2(1, 2); os.execvp(sys.argv[1], sys.argv[1:])"


def command_for(interpreter: str, script: str, arguments: list[str]) -> list[str]:
    """``interpreter script arguments...``, with stderr merged into stdout first."""
    return [interpreter, "-c", MERGE_STDERR, interpreter, script, *arguments]


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def shm_bytes(requested: str | None, policy: ContainerPolicy) -> int:
    """The run's ``docker.shm_size``, capped by its cluster's ``shm_mib`` (the cluster's
    when it asks for none): a run cannot take the host's memory through /dev/shm."""
    cap = policy.shm_mib * 1024**2
    if not requested:
        return cap
    number, unit = requested.rstrip("bBkKmMgG"), requested[len(requested.rstrip("bBkKmMgG")) :]
    return min(int(number) * SIZE_UNITS[unit.lower()], cap)


def container_config(
    request: ExecutionRequest,
    policy: ContainerPolicy,
    node_sdk: Path | None,
    worker_id: str,
    interpreter: str = DEFAULT_INTERPRETERS[0],
    service: str = "",
    built_image: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``containers.create`` (pure, so it can be checked). A run
    whose environment was built runs in ``built_image``, its packages on PYTHONPATH after
    the SDK's."""
    environment = request.environment
    python = interpreter
    docker_env = environment.get("docker") or {}
    variables = {
        str(k): str(v) for k, v in (environment.get("environment_variables") or {}).items()
    }
    variables.update(request.context_env)
    variables.update(
        {
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/tmp",
            contract.TRACKING_DIR: TRACKING,
        }
    )
    mounts = [
        Mount(WORKSPACE, str(request.working_dir), type="bind"),
        Mount(TRACKING, str(request.tracking_dir), type="bind"),
    ]
    path = [SDK] if node_sdk is not None else []
    if node_sdk is not None:
        mounts.append(Mount(SDK, str(node_sdk), type="bind", read_only=True))
    if built_image is not None:
        path.append(ENV_PATH)
    if path:
        variables["PYTHONPATH"] = ":".join([*path, *filter(None, [variables.get("PYTHONPATH")])])
    shm = shm_bytes(docker_env.get("shm_size"), policy)
    config: dict[str, Any] = {
        "image": built_image or image_for(request, policy),
        "command": command_for(python, request.script, request.arguments),
        "working_dir": WORKSPACE,
        "environment": variables,
        "user": policy.user,
        "mounts": mounts,
        "labels": {LABEL_RUN: request.run_id, LABEL_WORKER: worker_id, LABEL_SERVICE: service},
        "network_mode": policy.network,
        "read_only": policy.read_only_root,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={policy.tmp_mib}m"},
        "mem_limit": f"{policy.memory_mib}m",
        "memswap_limit": f"{policy.memory_mib}m",  # no swap: the limit is the limit
        "nano_cpus": int(policy.cpus * 1e9),
        "pids_limit": policy.pids,
        "shm_size": shm,
        "init": True,  # a real PID 1 forwards SIGTERM to the script and reaps its children
        "detach": True,
        "device_requests": device_requests(request.gpu_ids, policy),
    }
    if policy.drop_capabilities:
        config["cap_drop"] = ["ALL"]
    if policy.no_new_privileges:
        config["security_opt"] = ["no-new-privileges"]
    return config


class DockerExecution(Execution):
    def __init__(self, container: Any, policy: ContainerPolicy) -> None:
        self.container = container
        self.policy = policy
        self.handle = container.id
        self._exit: int | None = None
        self._done = threading.Event()
        threading.Thread(target=self._wait, name=f"wait-{container.short_id}", daemon=True).start()

    def _wait(self) -> None:
        while True:
            try:
                self._exit = int(self.container.wait()["StatusCode"])
                break
            except (APIError, DockerException, OSError) as exc:  # a dropped connection: again
                log.debug("waiting on %s: %s", self.container.short_id, exc)
                try:
                    self.container.reload()
                except NotFound:
                    self._exit = -9
                    break
                if self.container.status in ("exited", "dead"):
                    self._exit = int(self.container.attrs["State"]["ExitCode"])
                    break
        self._done.set()

    def output(self) -> Iterator[str]:
        for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
            yield chunk.decode("utf-8", errors="replace")

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self._exit if self._done.is_set() else None

    def terminate(self, grace_seconds: float) -> int:
        with contextlib.suppress(NotFound, APIError):
            self.container.stop(timeout=math.ceil(grace_seconds))  # SIGTERM, grace, SIGKILL
        code = self.wait(30)
        if code is None:
            with contextlib.suppress(NotFound, APIError):
                self.container.kill()
            code = self.wait(30)
        return -15 if code is None else code

    def kill_remaining(self) -> None:
        """Everything in the container ended with its init process."""

    def kill(self) -> None:
        """SIGKILL and remove the container in one call (the worker is exiting now)."""
        with contextlib.suppress(NotFound, APIError):
            self.container.remove(force=True)

    def failure_reason(self, exit_code: int) -> str | None:
        with contextlib.suppress(NotFound, APIError):
            self.container.reload()
            if self.container.attrs["State"].get("OOMKilled"):
                return f"out of memory (limit {self.policy.memory_mib} MiB)"
        return None

    def cleanup(self) -> None:
        with contextlib.suppress(NotFound, APIError):
            self.container.remove(force=True)


class DockerExecutor(Executor):
    name = environments.Executor.DOCKER
    interpreter: str | None = None
    image: str | None = None  # the environment's built image, when it has one

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.engine = client()

    def prepare(self, request: ExecutionRequest) -> None:
        """The image, present locally or pulled, then built with the environment's
        packages when it names some, and its interpreter (part of Preparing)."""
        policy = ContainerPolicy.model_validate(request.container)
        spec = build_spec(request.environment)
        # A base_dockerfile names its own base (its FROM): the run's image is not needed.
        image = None if spec is not None and spec.dockerfile else image_for(request, policy)
        if image is not None:
            self._present(request, image)
        built = None
        if spec is not None:
            self._stands_on(request, spec, image)
            built = self._built(request, spec, image, policy)
            self.image = image = built.image
        self.environment_used = environment_used(request.environment, built)
        assert image is not None
        given = (request.environment.get("python") or {}).get("interpreter_path")
        looked = repr(given) if given else " or ".join(map(repr, DEFAULT_INTERPRETERS))
        request.note(f"Looking for interpreter {looked} in image {image}")
        self.interpreter = self._interpreter(request, image)
        request.note(f"Interpreter: {self.interpreter}")

    def _present(self, request: ExecutionRequest, image: str) -> None:
        request.note(f"Image {image}: looking for it on this worker")
        try:
            found = self.engine.images.get(image)
            request.note(f"Image {image}: present on this worker ({found.short_id})")
        except ImageNotFound:
            request.note(f"Image {image}: not on this worker; pulling it")
            try:
                pulled = self.engine.images.pull(image)
            except (APIError, DockerException) as exc:
                raise ExecutionFailed(
                    f"image {image!r} is not on this worker and cannot be pulled: "
                    f"{getattr(exc, 'explanation', None) or exc}"
                ) from exc
            request.note(f"Image {image}: pulled ({getattr(pulled, 'short_id', pulled)})")

    def _stands_on(self, request: ExecutionRequest, spec: BuildSpec, image: str | None) -> None:
        """Every image an environment build stands on is here before it starts (pulled
        the way the run's image is), so the engine never fetches one during the build; and
        none has ONBUILD steps that would fetch in the build FROM it."""
        names = dockerfiles.images(spec.dockerfile) if spec.dockerfile else [image]
        for name in filter(None, names):
            if spec.dockerfile:
                self._present(request, name)
            triggers = (self.engine.images.get(name).attrs.get("Config") or {}).get("OnBuild")
            try:
                dockerfiles.check_triggers(list(triggers or []))
            except BadRequirement as exc:
                raise ExecutionFailed(f"image {name!r} cannot be built on: {exc}") from exc

    def _interpreter(self, request: ExecutionRequest, image: str) -> str:
        try:
            return interpreter_in_image(self.engine, image, request.environment)
        except (APIError, DockerException) as exc:
            raise ExecutionFailed(f"cannot look into image {image!r}: {exc}") from exc

    def _built(
        self, request: ExecutionRequest, spec: BuildSpec, image: str | None, policy: ContainerPolicy
    ) -> Built:
        """The environment's image from this engine, the cluster's registry, or a build."""
        from worker.environments import images

        owner = {LABEL_WORKER: self.node.worker_id, LABEL_SERVICE: self.node.service}
        config = replace(config_of(self.node.builds), owner=owner)
        self.build_log = BuildLog(request.note, request.canceled)
        try:
            built, self._pin = images.ensure_image(
                self.engine,
                spec,
                image,
                policy,
                lambda image_id: self._interpreter(request, image_id),
                config.cache,
                config,
                self.build_log,
            )
        except (APIError, DockerException) as exc:
            raise ExecutionFailed(f"environment build failed: {exc}") from exc
        return built

    def start(self, request: ExecutionRequest) -> Execution:
        policy = ContainerPolicy.model_validate(request.container)
        if not (request.working_dir / request.script).is_file():
            raise ExecutionFailed(f"entry script {request.script!r} is not in the snapshot")
        hand_over(request.working_dir, policy.user)
        hand_over(request.tracking_dir, policy.user)
        interpreter = self.interpreter or interpreter_in_image(
            self.engine, self.image or image_for(request, policy), request.environment
        )
        config = container_config(
            request,
            policy,
            self.node.sdk_dir,
            self.node.worker_id,
            interpreter,
            self.node.service,
            built_image=self.image,
        )
        try:
            container = self.engine.containers.create(**config)
            request.note(
                f"Container {container.short_id} created from {config['image']} (user "
                f"{policy.user}, network {policy.network}, memory {policy.memory_mib} MiB, "
                f"{policy.cpus:g} CPU)"
            )
            container.start()
        except (APIError, DockerException) as exc:
            raise ExecutionFailed(f"cannot start the container: {exc}") from exc
        request.note(f"Container {container.short_id} started")
        return DockerExecution(container, policy)

    def kill_leftover(self, run_id: str, handle: str) -> None:
        remove_containers(self.engine, {LABEL_RUN: run_id, LABEL_SERVICE: self.node.service})

    def remove_orphans(self, live_workers: set[str]) -> list[str]:
        """Run containers on this engine whose worker is gone: a previous life of this
        worker, or a worker that was replaced under another id (a new pod, say)."""
        removed = []
        ours = {"label": [LABEL_RUN, f"{LABEL_SERVICE}={self.node.service}"]}
        for container in self.engine.containers.list(all=True, filters=ours):
            if container.labels.get(LABEL_WORKER) in live_workers:
                continue
            with contextlib.suppress(NotFound, APIError):
                container.remove(force=True)
                removed.append(container.labels.get(LABEL_RUN, container.id))
        return removed

    def remove_dead_builds(self, live_workers: set[str]) -> int:
        """What environment builds of this deployment left on this engine when their worker
        died in them: containers probing an image's Python, base_dockerfile images. The
        builds of live workers keep theirs."""
        from worker.environments.images import LABEL_PROBE, LABEL_STAGE

        service = f"{LABEL_SERVICE}={self.node.service}"
        removed = 0
        for container in self.engine.containers.list(
            all=True, filters={"label": [LABEL_PROBE, service]}
        ):
            if container.labels.get(LABEL_WORKER) not in live_workers:
                with contextlib.suppress(NotFound, APIError):
                    container.remove(force=True)
                    removed += 1
        for image in self.engine.images.list(filters={"label": [LABEL_STAGE, service]}):
            if image.labels.get(LABEL_WORKER) not in live_workers:
                with contextlib.suppress(ImageNotFound, APIError):
                    self.engine.images.remove(image.id, force=True)
                    removed += 1
        return removed


def remove_containers(engine: docker.DockerClient, labels: dict[str, str]) -> list[str]:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    removed = []
    for container in engine.containers.list(all=True, filters=filters):
        with contextlib.suppress(NotFound, APIError):
            container.remove(force=True)
            removed.append(container.labels.get(LABEL_RUN, container.id))
    return removed
