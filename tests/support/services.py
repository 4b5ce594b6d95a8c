"""Real services for tests: a private Redis, a throwaway PostgreSQL, a live Runyard stack.

Each starts on a free port of its own and is stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from runyard.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:  # type: ignore[type-arg]
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class RedisServer:
    port: int
    folder: Path
    process: subprocess.Popen | None = None  # type: ignore[type-arg]
    bind: str = "127.0.0.1"  # add addresses for clients on other (namespace) hosts

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                *self.bind.split(),
                "--protected-mode",
                "no",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: _port_open(self.port), 10, what="redis-server")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a SQLAlchemy URL of its ``postgres`` database."""
    initdb = shutil.which("initdb") or _pg_binary("initdb")
    pg_ctl = shutil.which("pg_ctl") or _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    data, sockets, logfile = folder / "data", folder / "sock", folder / "pg.log"
    sockets.mkdir(exist_ok=True)
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = pwd.getpwnam("postgres")
        for path in (folder, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(logfile), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
        )


def _pg_binary(name: str) -> str | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def runyard(*args: str) -> list[str]:
    return [sys.executable, "-m", "runyard", *args]


# Fast liveness so node-loss tests finish in seconds; production defaults are 2/10/20 s.
FAST_TIMINGS = {
    "RUNYARD_HEARTBEAT_INTERVAL": "0.5",
    "RUNYARD_NOT_RESPONDING_AFTER": "3",
    "RUNYARD_FAILED_AFTER": "3",
    "RUNYARD_DISPATCH_TIMEOUT": "15",
    "RUNYARD_SWEEP_INTERVAL": "0.5",
    # Small enough that a test can go over it without writing hundreds of megabytes.
    "RUNYARD_SNAPSHOT_MAX_FILES": "300",
}


@dataclass
class Stack:
    """The API and the scheduler as real processes, and workers started on demand."""

    root: Path
    redis: RedisServer
    database_url: str = ""
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"  # where the API listens (0.0.0.0 for workers on other hosts)
    processes: list[subprocess.Popen] = field(default_factory=list)  # type: ignore[type-arg]
    workers: list[subprocess.Popen] = field(default_factory=list)  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        env.update(FAST_TIMINGS)
        env.update(
            RUNYARD_DATA_DIR=str(self.root / "data"),
            RUNYARD_REDIS_URL=self.redis.url,
            RUNYARD_API_URL=self.url,
            RUNYARD_URL=self.url,
        )
        if self.database_url:
            env["RUNYARD_DATABASE_URL"] = self.database_url
        return env

    def client(self) -> Client:
        return Client(self.url)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._spawn(runyard("api", "--host", self.host, "--port", str(self.port)), "api.log")
        wait_until(self._healthy, 30, 0.1, what="the API")
        self.start_scheduler()

    def start_scheduler(self) -> subprocess.Popen:  # type: ignore[type-arg]
        return self._spawn(runyard("scheduler"), "scheduler.log")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _spawn(self, command: list[str], log: str) -> subprocess.Popen:  # type: ignore[type-arg]
        out = open(self.root / log, "ab")  # noqa: SIM115 (kept open for the child)
        process = subprocess.Popen(
            command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def start_worker(
        self, *clusters: str, slots: int = 1, name: str | None = None, wait: bool = True
    ) -> subprocess.Popen:  # type: ignore[type-arg]
        name = name or f"w-{secrets.token_hex(3)}"
        args = ["worker", "--slots", str(slots), "--name", name]
        for cluster in clusters:
            args += ["--cluster", cluster]
        process = self._spawn(runyard(*args), f"worker-{name}.log")
        self.workers.append(process)
        if wait:
            client = self.client()
            wait_until(
                lambda: any(w["id"] == name for w in client.list_workers()),
                30,
                0.1,
                what=f"worker {name} to heartbeat",
            )
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# --- Docker ---------------------------------------------------------------------------------

RUN_IMAGE = "runyard-run-base:bookworm"


def docker_ready() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@contextmanager
def docker_engine(folder: Path) -> Iterator[None]:
    """The Docker engine: used as it is when running, else started here and stopped after."""
    if docker_ready():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeError("Docker is not installed (apt-get install docker.io)")
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "dockerd.log", "ab")  # noqa: SIM115 (kept open for the daemon)
    process = subprocess.Popen(
        [dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_until(docker_ready, 60, 0.5, what="dockerd")
        yield
    finally:
        stop_process(process, timeout=30)
        log.close()


def ensure_run_image(folder: Path, tag: str = RUN_IMAGE) -> str:
    """A small Debian with Python 3 (no registry here: built with debootstrap, cached by tag)."""
    found = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    if found.returncode == 0:
        return tag
    rootfs = folder / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(rootfs)],
        check=True,
        capture_output=True,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "import", "-", tag], stdin=tar.stdout, check=True, capture_output=True
    )
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return tag
