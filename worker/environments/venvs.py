"""Local clusters: a venv per build hash in the worker's cache, made by uv from the run's
interpreter (or the ``python_version`` found on this host: nothing is downloaded), built
in a staging folder and renamed into place, so a venv that exists is whole.

The hash's base is the interpreter's identity (its real path and version). A cache hit
runs no process: the venv and its record are there, the record is touched.

The worker runs the interpreter (to ask its version, to make the venv) as its own user,
so only one the runs cannot have planted is used: its real path and every folder above
it belong to root or the worker's user and no one else may write them. Packages come
as wheels only (``--no-build``): building an sdist would run its code here too."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from uv import find_uv_bin

from protocol.build_specs import BuildSpec, matches_python
from runyard.errors import ExecutionFailed
from worker.environments import sources
from worker.environments.build_log import BuildLog, Deadline, run_logged
from worker.environments.cache import EnvironmentCache, folder_size
from worker.environments.config import BuildConfig
from worker.environments.failures import installer_failure
from worker.environments.locks import Pin, host_lock
from worker.environments.used import Built, installed_packages

# Never given to an installer: the worker's own settings (its broker's password).
WITHHELD = ("RUNYARD_", "CELERY_")
VERSION = "import sys; print('.'.join(map(str, sys.version_info[:3])))"


def installer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(WITHHELD)}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the host's interpreters only
    return env


def trusted_path(interpreter: str) -> str:
    """The interpreter's real path, when no run can have put it there or changed it: it
    and each folder above it belong to root or the worker's user, and neither their group
    nor others may write them. Else ExecutionFailed, naming it."""
    real = Path(os.path.realpath(interpreter))
    owners = {0, os.geteuid()}
    for path in (real, *real.parents):
        try:
            info = os.stat(path)
        except OSError as exc:
            raise ExecutionFailed(f"interpreter {interpreter} cannot be read: {exc}") from exc
        why = None
        if info.st_uid not in owners:
            why = f"{path} belongs to user {info.st_uid}, not to root or the worker's user"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            why = f"{path} may be written by users other than its owner"
        if why:
            named = interpreter if str(real) == interpreter else f"{interpreter} ({real})"
            raise ExecutionFailed(
                f"interpreter {named} is not one this worker builds an environment from: "
                f"{why}, so a run could have put it there; use an interpreter whose path "
                "only root or the worker's user can change"
            )
    return str(real)


@functools.cache
def _version_of(real_path: str, mtime: float) -> str:
    if real_path == os.path.realpath(sys.executable):
        return ".".join(map(str, sys.version_info[:3]))
    done = subprocess.run(
        [real_path, "-c", VERSION],
        capture_output=True,
        text=True,
        env=installer_env(),  # never the worker's own secrets
        cwd="/",
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ExecutionFailed(f"interpreter {real_path} does not run: {done.stderr[-300:]}")
    return done.stdout.strip()


def identity(interpreter: str) -> tuple[str, str]:
    """(real path, version) of an interpreter the runs cannot have planted: what a venv
    built from it depends on."""
    real = trusted_path(interpreter)
    return real, _version_of(real, os.stat(real).st_mtime)


@functools.cache
def _find_python(version: str) -> str:
    done = subprocess.run(
        [find_uv_bin(), "python", "find", version],
        capture_output=True,
        text=True,
        env=installer_env(),
        cwd="/",  # no .python-version or project file of the worker's cwd applies
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ExecutionFailed(
            f"the environment asks for Python {version}, which this worker does not have "
            f"(no interpreter found: {done.stderr.strip()[-300:]})"
        )
    return done.stdout.strip()


def base_interpreter(spec: BuildSpec, interpreter: str, given: bool) -> str:
    """The interpreter the venv is made from: the run's own (``interpreter_path``, or the
    worker's Python), or the host's ``python_version`` when the run's does not match."""
    if not spec.python_version:
        return interpreter
    _, version = identity(interpreter)
    actual = tuple(int(part) for part in version.split("."))
    if matches_python(spec.python_version, actual):
        return interpreter
    if given:
        raise ExecutionFailed(
            f"the environment asks for Python {spec.python_version}, but its "
            f"interpreter_path {interpreter} is Python {version}"
        )
    return _find_python(spec.python_version)


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(
    spec: BuildSpec,
    interpreter: str,
    cache: EnvironmentCache,
    config: BuildConfig,
    log: BuildLog,
) -> tuple[Built, Pin]:
    """The run's venv, found or built, and the pin the run holds on it until cleanup."""
    real, version = identity(interpreter)
    build_hash = spec.build_digest(f"venv:{real}:{version}")
    pin = cache.pin(build_hash)
    try:
        built = _found(spec, build_hash, cache)
        if built is None:
            log.line(f"Environment {build_hash}: not in this worker's cache; waiting for its build")
            waiting = Deadline(config.timeout_seconds, log.canceled)
            with host_lock(cache.lock_path(build_hash), waiting):
                built = _found(spec, build_hash, cache)  # built meanwhile by another run
                if built is None:
                    built = _build(spec, build_hash, real, version, cache, config, log)
                    evict(cache, config, log)
        if built.cached:
            log.line(f"Environment {build_hash}: cache hit (venv {built.venv})")
        return built, pin
    except BaseException:
        pin.release()
        raise


def _found(spec: BuildSpec, build_hash: str, cache: EnvironmentCache) -> Built | None:
    record = cache.record(build_hash)
    venv = cache.venv(build_hash)
    if record is None or not python_of(venv).exists():
        return None
    cache.used(build_hash)
    return Built(
        hash=build_hash,
        spec_hash=spec.digest(),
        packages=list(record.get("packages") or []),
        venv=str(venv),
        cached=True,
    )


def _build(
    spec: BuildSpec,
    build_hash: str,
    interpreter: str,
    version: str,
    cache: EnvironmentCache,
    config: BuildConfig,
    log: BuildLog,
) -> Built:
    """A venv from ``interpreter`` (a trusted real path) with the spec's wheels."""
    started = time.monotonic()
    deadline = Deadline(config.timeout_seconds, log.canceled)
    staging = cache.staging(build_hash)
    uv, env = find_uv_bin(), installer_env()
    installs_for = f"Python {'.'.join(version.split('.')[:2])} on {sysconfig.get_platform()}"
    try:
        draft = staging / "venv"
        arguments = sources.host_sources()
        log.line(f"Environment {build_hash}: building a venv from {interpreter}")
        log.line(f"Package sources: {sources.describe(arguments)}")
        since = len(log.lines)
        code = run_logged(
            [uv, "venv", "--relocatable", "--python", interpreter, str(draft)],
            log,
            deadline,
            env,
            cwd=staging,
        )
        if code != 0:
            raise ExecutionFailed(installer_failure(spec, log.tail(4, since), installs_for))
        if spec.requirements:
            requirements = staging / "requirements.txt"
            requirements.write_text("".join(f"{r}\n" for r in spec.requirements))
            command = [
                uv, "pip", "install", "--no-build", "--python", str(python_of(draft)),
                *arguments,
            ]  # fmt: skip
            since = len(log.lines)
            code = run_logged([*command, "-r", str(requirements)], log, deadline, env, staging)
            if code != 0:
                raise ExecutionFailed(installer_failure(spec, log.tail(4, since), installs_for))
        deadline.check()
        readable(draft)
        packages = installed_packages(*draft.glob("lib/python*/site-packages"))
        target = cache.venv(build_hash)
        if target.exists():  # a venv whose record was never written: not whole
            cache.remove_venv({"hash": build_hash})
        os.replace(draft, target)
        seconds = time.monotonic() - started
        record: dict[str, Any] = {
            "hash": build_hash,
            "spec_hash": spec.digest(),
            "kind": "venv",
            "packages": packages,
            "size_bytes": folder_size(target),
            "build_seconds": seconds,
            "venv": str(target),
        }
        cache.write_record(build_hash, record)
        log.line(f"Environment {build_hash}: built in {seconds:.1f} s ({len(packages)} packages)")
        return Built(build_hash, spec.digest(), packages, venv=str(target), build_seconds=seconds)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def readable(folder: Path) -> None:
    """Readable (and its folders enterable) by the runs' user, whoever built it."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & 0o7777)
    os.chmod(folder, 0o755)


def evict(cache: EnvironmentCache, config: BuildConfig, log: BuildLog, **removers: Any) -> None:
    """After a build: the least recently used environments over the limit go (never one
    a run holds)."""
    limit = config.max_mib * 1024 * 1024
    for gone in cache.evict(limit, {"venv": cache.remove_venv, **removers}):
        log.line(
            f"Environment {gone.hash}: evicted from the cache ({gone.kind}, "
            f"{gone.size_bytes / 1024 / 1024:.1f} MiB, least recently used; the cache is "
            f"limited to {config.max_mib} MiB)"
        )
