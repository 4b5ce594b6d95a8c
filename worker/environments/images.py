"""Docker clusters: an image ``runyard-env:<hash>`` built FROM the run's base image with
the packages in /opt/runyard/env, and no container ever on a network.

uv resolves and downloads on the worker host, through the host's own package sources,
for the base image's interpreter (probed once per image id, in a container with no
network: its Python version, its libc, its machine), into a staging folder; ``docker
build`` (network none) then only copies that folder in. A ``base_dockerfile`` is built
first, also with no network, and its result is the base.

The hash's base is the base image's id (content-addressed). A cache hit is one look-up of
the tag: no probe, no installer, no lock."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import RequestException
from uv import find_uv_bin

from protocol import dockerfiles
from protocol.build_specs import BuildSpec, matches_python
from protocol.environments import ContainerPolicy
from runyard.errors import ExecutionFailed, RunyardError
from worker.environments import sources
from worker.environments.build_log import BuildLog, Deadline, run_logged
from worker.environments.cache import EnvironmentCache
from worker.environments.config import BuildConfig
from worker.environments.engine import cut_at
from worker.environments.failures import installer_failure
from worker.environments.locks import Pin, cluster_lock, host_lock
from worker.environments.used import Built, installed_packages
from worker.environments.venvs import evict, installer_env, readable

REPOSITORY = "runyard-env"
ENV_PATH = "/opt/runyard/env"  # where the packages are in the image (on PYTHONPATH)
LABEL_ENV = "runyard.env"
LABEL_SPEC = "runyard.env.spec"
LABEL_PACKAGES = "runyard.env.packages"
LABEL_BASE = "runyard.env.base"
LABEL_STAGE = "runyard.env.stage"  # a base_dockerfile's image, built for the environment
LABEL_PROBE = "runyard.env.probe"  # a container asking an image's Python what it is

PROBE = (
    "import json, os, platform, sys\n"
    "try:\n    libc = os.confstr('CS_GNU_LIBC_VERSION') or ''\n"
    "except (ValueError, OSError):\n    libc = ''\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'libc': libc,"
    " 'machine': platform.machine()}))\n"
)


def tag_of(build_hash: str) -> str:
    return f"{REPOSITORY}:{build_hash}"


@dataclass(frozen=True)
class Interpreter:
    """What uv must know of an image's Python to install for it from another host."""

    version: tuple[int, ...]
    platform: str  # uv's --python-platform, e.g. x86_64-manylinux_2_36

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


_probed: dict[tuple[str, str], Interpreter] = {}  # (image id, interpreter) -> its Python


def probe(
    engine: docker.DockerClient,
    image_id: str,
    interpreter: str,
    policy: ContainerPolicy,
    deadline: Deadline,
    owner: dict[str, str],
) -> Interpreter:
    """The image's Python, asked once per image id. That runs the image's own code: in a
    container confined as the cluster's runs are (its user, no capabilities, no new
    privileges, its memory and pids limits) with no network, labelled as this worker's (a
    starting worker removes one a dead worker left), within the build's deadline, and
    removed however it ends."""
    key = (image_id, interpreter)
    if key not in _probed:
        found = _ask(engine, image_id, interpreter, policy, deadline, owner)
        _probed[key] = Interpreter(tuple(found["version"]), platform_of(found))
    return _probed[key]


def _ask(
    engine: docker.DockerClient,
    image_id: str,
    interpreter: str,
    policy: ContainerPolicy,
    deadline: Deadline,
    owner: dict[str, str],
) -> dict[str, Any]:
    cannot = f"cannot ask the image's {interpreter} what it is"
    try:
        container = engine.containers.create(
            image_id,
            entrypoint=[interpreter, "-c", PROBE],
            command=[],
            user=policy.user,
            network_disabled=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            mem_limit=f"{policy.memory_mib}m",
            memswap_limit=f"{policy.memory_mib}m",
            nano_cpus=int(policy.cpus * 1e9),
            pids_limit=policy.pids,
            labels={**owner, LABEL_PROBE: image_id},
        )
    except (APIError, DockerException) as exc:
        raise ExecutionFailed(f"{cannot}: {exc}") from exc
    try:
        with deadline.watch(lambda: _remove_container(container)) as watch:
            try:
                container.start()
                code = _exit_code(container, lambda: watch.reason is not None)
                out = container.logs(stdout=True, stderr=False).decode(errors="replace")
                err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            except (APIError, DockerException, RequestException) as exc:
                if watch.reason is None:
                    raise ExecutionFailed(f"{cannot}: {exc}") from exc
        if watch.reason is not None:
            raise watch.reason
    finally:
        _remove_container(container)
    lines = out.strip().splitlines()
    try:
        return dict(json.loads(lines[-1]))
    except (ValueError, IndexError, TypeError):
        said = repr(lines[-1][-300:]) if lines else f"nothing (exit code {code})"
        why = f": {err.strip()[-300:]}" if err.strip() else ""
        raise ExecutionFailed(f"{cannot}: it said {said}{why}") from None


def _exit_code(container: Any, cut: Callable[[], bool]) -> int | None:
    """Waits for the container to end, or for the wait to be cut (None). A long wait is
    many short ones: the client's own timeout would end one."""
    while not cut():
        try:
            return int(container.wait(timeout=60)["StatusCode"])
        except RequestException:  # timed out: still running
            continue
    return None


def _remove_container(container: Any) -> None:
    with contextlib.suppress(NotFound, APIError, DockerException):
        container.remove(force=True)


# The manylinux targets uv's --python-platform knows (uv 0.13): glibc 2.17, 2.28, 2.31 to
# 2.40. A wheel for an older glibc installs on a newer one, never the other way round.
MANYLINUX_MINORS = (17, 28, *range(31, 41))


def platform_of(found: dict[str, Any]) -> str:
    """uv's target platform: ``<machine>-manylinux_2_<minor>`` for the newest glibc uv
    knows that is not newer than the image's, or musl's."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(found["machine"], found["machine"])
    glibc = re.fullmatch(r"glibc 2\.([0-9]+)", found.get("libc") or "")
    if glibc:
        known = [minor for minor in MANYLINUX_MINORS if minor <= int(glibc[1])]
        if not known:
            raise ExecutionFailed(
                f"the base image's glibc 2.{glibc[1]} is older than 2.17, the oldest one "
                "Runyard installs wheels for (choose a newer base image)"
            )
        return f"{machine}-manylinux_2_{known[-1]}"
    return f"{machine}-unknown-linux-musl"


def base_identity(
    engine: docker.DockerClient, base_image: str | None, dockerfile: str | None
) -> str:
    """What the build stands on: the base image's id, or (with a ``base_dockerfile``)
    the ids of every image it names (its FROMs and ``COPY --from``s)."""
    if not dockerfile:
        return f"docker:{_image_id(engine, base_image or '')}"
    return "docker-file:" + ",".join(_image_id(engine, i) for i in dockerfiles.images(dockerfile))


def _image_id(engine: docker.DockerClient, image: str) -> str:
    try:
        return engine.images.get(image).id
    except (ImageNotFound, APIError):
        return image


def ensure_image(
    engine: docker.DockerClient,
    spec: BuildSpec,
    base_image: str | None,
    policy: ContainerPolicy,
    find_interpreter: Callable[[str], str],
    cache: EnvironmentCache,
    config: BuildConfig,
    log: BuildLog,
) -> tuple[Built, Pin]:
    """The run's image, found, pulled from the cluster's registry, or built; and the pin
    the run holds on it until cleanup."""
    build_hash = spec.build_digest(base_identity(engine, base_image, spec.dockerfile))
    pin = cache.pin(build_hash)
    try:
        built = _found(engine, spec, build_hash, cache)
        if built is None:
            log.line(f"Environment {build_hash}: not on this worker; waiting for its build")
            scope = policy.registry or engine.info()["ID"]
            waiting = Deadline(config.timeout_seconds, log.canceled)
            with (
                host_lock(cache.lock_path(build_hash), waiting),
                cluster_lock(config.redis, scope, build_hash, waiting),
            ):
                built = _found(engine, spec, build_hash, cache)
                transfer = Deadline(config.timeout_seconds, log.canceled)
                if (
                    built is None
                    and policy.registry
                    and _pulled(engine, policy, build_hash, spec, base_image, log, transfer)
                ):
                    built = _found(engine, spec, build_hash, cache)
                if built is None:
                    built = _build(
                        engine, spec, build_hash, base_image, find_interpreter, cache, config, log,
                        policy,
                    )  # fmt: skip
                    if policy.registry:
                        transfer = Deadline(config.timeout_seconds, log.canceled)
                        _push(engine, policy.registry, build_hash, log, transfer)
                    evict(cache, config, log, image=lambda record: remove_image(engine, record))
        if built.cached:
            log.line(f"Environment {build_hash}: cache hit (image {built.image})")
        return built, pin
    except BaseException:
        pin.release()
        raise


def _pulled(
    engine: docker.DockerClient,
    policy: ContainerPolicy,
    build_hash: str,
    spec: BuildSpec,
    base_image: str | None,
    log: BuildLog,
    deadline: Deadline,
) -> bool:
    """The build pulled from the cluster's registry, if it has it and it is the build: a
    tag proves nothing (anyone who can push can plant ``runyard-env:<hash>``), so one that
    is not is removed, the log says why, and the caller builds its own. A registry that
    cannot be reached or refuses the engine is a warning in the log: the build happens
    here."""
    from worker.environments import registry  # REGISTRY's module

    assert policy.registry is not None
    try:
        if not registry.pull(engine, policy.registry, build_hash, log.line, deadline):
            return False
    except (ExecutionFailed, DockerException) as exc:
        log.line(f"Warning: {exc}; building the environment here instead")
        return False
    why = _not_the_build(engine, spec, build_hash, base_image)
    if why is None:
        return True
    log.line(
        f"{registry.remote_name(policy.registry, build_hash)}: not used, {why}; building it here"
    )
    with contextlib.suppress(ImageNotFound, NotFound, APIError):
        engine.images.remove(tag_of(build_hash))
    return False


def _push(
    engine: docker.DockerClient,
    registry_name: str,
    build_hash: str,
    log: BuildLog,
    deadline: Deadline,
) -> None:
    """Shares a good build with the cluster's other workers; a registry problem is a
    warning in the log: this run has its image, the others build their own."""
    from worker.environments import registry  # REGISTRY's module

    try:
        registry.push(engine, registry_name, build_hash, log.line, deadline)
    except (ExecutionFailed, DockerException) as exc:
        log.line(f"Warning: {exc}; the image stays on this worker only")


def _not_the_build(
    engine: docker.DockerClient, spec: BuildSpec, build_hash: str, base_image: str | None
) -> str | None:
    """Why the local ``runyard-env:<hash>`` cannot be this environment's build, or None:
    its labels must name the build and the spec, and its first layers must be those of
    the base it stands on here (the run's image, or the base_dockerfile's last FROM)."""
    image = engine.images.get(tag_of(build_hash))
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    if labels.get(LABEL_ENV) != build_hash or labels.get(LABEL_SPEC) != spec.digest():
        return f"its labels do not name this environment (runyard.env={labels.get(LABEL_ENV)})"
    base = dockerfiles.final_base(spec.dockerfile) if spec.dockerfile else base_image
    if not base:
        return None  # FROM scratch: nothing below it to compare
    try:
        below = (engine.images.get(base).attrs.get("RootFS") or {}).get("Layers") or []
    except ImageNotFound:
        return f"its base {base} is not on this worker"
    layers = (image.attrs.get("RootFS") or {}).get("Layers") or []
    if layers[: len(below)] != below:
        return f"it is not built on this worker's {base}"
    return None


def _found(
    engine: docker.DockerClient, spec: BuildSpec, build_hash: str, cache: EnvironmentCache
) -> Built | None:
    tag = tag_of(build_hash)
    try:
        image = engine.images.get(tag)
    except ImageNotFound:
        return None
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    if cache.record(build_hash) is None:  # pulled, or built by a worker with another cache
        cache.write_record(build_hash, _record(engine, image, spec, build_hash, 0.0))
    else:
        cache.used(build_hash)
    return Built(
        hash=build_hash,
        spec_hash=spec.digest(),
        packages=json.loads(labels.get(LABEL_PACKAGES) or "[]"),
        image=tag,
        cached=True,
    )


def _record(
    engine: docker.DockerClient, image: Any, spec: BuildSpec, build_hash: str, seconds: float
) -> dict[str, Any]:
    """The image's own size: what it adds to its base (layers shared with it cost nothing)."""
    size = int(image.attrs.get("Size") or 0)
    parent = image.attrs.get("Parent") or ""
    base_size = 0
    with contextlib.suppress(ImageNotFound, APIError):
        # The base is the first image below it that is not part of the build.
        base = engine.images.get(image.labels.get(LABEL_BASE) or parent)
        base_size = int(base.attrs.get("Size") or 0)
    return {
        "hash": build_hash,
        "spec_hash": spec.digest(),
        "kind": "image",
        "image": tag_of(build_hash),
        "size_bytes": max(size - base_size, 0),
        "build_seconds": seconds,
    }


def _build(
    engine: docker.DockerClient,
    spec: BuildSpec,
    build_hash: str,
    base_image: str | None,
    find_interpreter: Callable[[str], str],
    cache: EnvironmentCache,
    config: BuildConfig,
    log: BuildLog,
    policy: ContainerPolicy,
) -> Built:
    started = time.monotonic()
    deadline = Deadline(config.timeout_seconds, log.canceled)
    staging = cache.staging(build_hash)
    stage: str | None = None  # the base_dockerfile's image, once built
    try:
        if spec.dockerfile:
            log.line(f"Environment {build_hash}: building its base_dockerfile (no network)")
            (staging / "base").mkdir()
            (staging / "base" / "Dockerfile").write_text(spec.dockerfile)
            base_id = stage = docker_build(
                engine,
                staging / "base",
                log,
                deadline,
                what="base_dockerfile",
                labels={**config.owner, LABEL_STAGE: build_hash},
            )
        else:
            base_id = engine.images.get(base_image).id
        interpreter = find_interpreter(base_id)
        python = probe(engine, base_id, interpreter, policy, deadline, dict(config.owner))
        if not matches_python(spec.python_version, python.version):
            raise ExecutionFailed(
                f"the environment asks for Python {spec.python_version}, but its image's "
                f"{interpreter} is Python {python.version_text} (choose a base image with that "
                "Python, or leave python_version out)"
            )
        target = staging / "env"
        target.mkdir()
        if spec.requirements:
            arguments = sources.host_sources()
            log.line(
                f"Environment {build_hash}: resolving on this host for Python "
                f"{python.version_text} ({python.platform})"
            )
            log.line(f"Package sources: {sources.describe(arguments)}")
            requirements = staging / "requirements.txt"
            requirements.write_text("".join(f"{r}\n" for r in spec.requirements))
            command = [
                find_uv_bin(), "pip", "install", "--no-build", "--target", str(target),
                "--python-version", python.version_text, "--python-platform", python.platform,
                *arguments, "-r", str(requirements),
            ]  # fmt: skip
            since = len(log.lines)
            if run_logged(command, log, deadline, installer_env(), staging) != 0:
                minor = ".".join(map(str, python.version[:2]))
                installs_for = f"Python {minor} on {python.platform}"
                raise ExecutionFailed(installer_failure(spec, log.tail(4, since), installs_for))
        packages = installed_packages(target)
        readable(target)  # COPY keeps modes: the run's user reads what a umask 077 made
        labels = {
            LABEL_ENV: build_hash,
            LABEL_SPEC: spec.digest(),
            LABEL_PACKAGES: json.dumps(packages),
            LABEL_BASE: base_id,
        }
        # One LABEL line: each label given to the build API would be a step of its own.
        label_line = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels.items())
        (staging / "Dockerfile").write_text(
            f"FROM {base_id}\nCOPY env {ENV_PATH}\nLABEL {label_line}\n"
        )
        log.line(f"Environment {build_hash}: building image {tag_of(build_hash)} (no network)")
        docker_build(engine, staging, log, deadline, what="image", tag=tag_of(build_hash))
        seconds = time.monotonic() - started
        image = engine.images.get(tag_of(build_hash))
        cache.write_record(build_hash, _record(engine, image, spec, build_hash, seconds))
        log.line(f"Environment {build_hash}: built in {seconds:.1f} s ({len(packages)} packages)")
        return Built(
            build_hash, spec.digest(), packages, image=tag_of(build_hash), build_seconds=seconds
        )
    except BaseException:
        if stage is not None:  # no half-built environment stays: its base goes too
            with contextlib.suppress(APIError, DockerException):
                engine.images.remove(stage)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_RUNNING = re.compile(r"---> Running in ([0-9a-f]{12,64})")


def docker_build(
    engine: docker.DockerClient,
    context: Path,
    log: BuildLog,
    deadline: Deadline,
    what: str,
    **options: Any,
) -> str:
    """``docker build`` with no network, its output into the log; the built image's id.
    Past the deadline, or once the run is canceled, the running step's container goes,
    then the connection (the engine cancels a build whose client went away)."""
    step: list[str] = []  # the container of the step running now ("Running in <id>")

    def remove_step() -> None:
        if step:
            with contextlib.suppress(APIError, DockerException):
                engine.api.remove_container(step[-1], force=True)

    built: str | None = None
    error: str | None = None
    try:
        with cut_at(engine, deadline, remove_step) as api:
            stream = api.build(
                path=str(context), network_mode="none", rm=True, forcerm=True, pull=False,
                decode=True, **options,
            )  # fmt: skip
            for item in stream:
                if "stream" in item:
                    for line in item["stream"].splitlines():
                        if line.strip():
                            log.line(line)
                        running = _RUNNING.search(line)
                        if running:
                            step.append(running[1])
                if "aux" in item and "ID" in (item["aux"] or {}):
                    built = item["aux"]["ID"]
                if "error" in item:
                    error = str(item["error"]).strip()
                    log.line(error)
    except RunyardError:  # the deadline's reason: its step is gone
        raise
    except Exception as exc:
        raise ExecutionFailed(f"the {what} build failed: {exc}") from exc
    if error is not None or built is None:
        reason = " | ".join(log.tail(4)) or error or "no image was made"
        if what == "base_dockerfile":
            raise ExecutionFailed(
                f"the environment's base_dockerfile failed to build (builds have no network: "
                f"install packages through pip_packages instead): {reason}"
            )
        raise ExecutionFailed(f"the environment's image failed to build: {reason}")
    return built


def remove_image(engine: docker.DockerClient, record: dict[str, Any]) -> bool:
    """Never forced: an image a container still uses stays (the engine refuses)."""
    try:
        engine.images.remove(tag_of(record["hash"]))
    except (ImageNotFound, NotFound):
        return True
    except APIError:
        return False
    return True
