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
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:  # type: ignore[type-arg]
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# The whole suite runs as a deployment should: Redis behind a password, every request with a
# token. The secrets are random per session; test_secrets checks none of them reaches a log.
REDIS_PASSWORD = "rp-" + secrets.token_hex(12)
ADMIN_TOKEN = "ryt_admin-" + secrets.token_hex(16)
os.environ["RUNYARD_TOKEN"] = ADMIN_TOKEN  # what the SDK and Client in the tests present
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # headers for raw httpx calls
# Every secret a test hands out, for the end-of-session check that no log holds one.
ISSUED_SECRETS: set[str] = {REDIS_PASSWORD, ADMIN_TOKEN}


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 (made with trustme)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, folder: Path) -> TlsFiles:
        import trustme

        folder.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA()
        server = authority.issue_cert("127.0.0.1", "localhost")
        files = cls(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
        authority.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.cert))
        server.private_key_pem.write_to_path(str(files.key))
        return files


@dataclass
class RedisServer:
    port: int
    folder: Path
    process: subprocess.Popen | None = None  # type: ignore[type-arg]
    bind: str = "127.0.0.1"  # add addresses for clients on other (namespace) hosts
    password: str = REDIS_PASSWORD
    tls: TlsFiles | None = None  # serve TLS only (rediss://), with these files
    unixsocket: Path | None = None  # also listen on this unix socket (``unix_url``)

    @property
    def unix_url(self) -> str:
        assert self.unixsocket is not None
        return f"unix://:{self.password}@{self.unixsocket}?db=0"

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, host: str) -> str:
        if self.tls is None:
            return f"redis://:{self.password}@{host}:{self.port}/0"
        query = f"ssl_cert_reqs=required&ssl_ca_certs={self.tls.ca}"
        return f"rediss://:{self.password}@{host}:{self.port}/0?{query}"

    def _listen_args(self) -> list[str]:
        if self.unixsocket is not None:
            return ["--port", str(self.port), "--unixsocket", str(self.unixsocket)]
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
        ]  # fmt: skip

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                *self._listen_args(),
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
                "--requirepass",
                self.password,
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 10, what="redis-server")

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
def postgres_server(
    folder: Path, tls: TlsFiles | None = None, password: str | None = None
) -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a SQLAlchemy URL of its ``postgres`` database.
    With ``tls`` it serves TLS (the URL verifies the certificate); with ``password`` TCP
    logins need it."""
    initdb = shutil.which("initdb") or _pg_binary("initdb")
    pg_ctl = shutil.which("pg_ctl") or _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    data, sockets, logfile = folder / "data", folder / "sock", folder / "pg.log"
    sockets.mkdir(exist_ok=True)
    as_user: list[str] = []
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if owner is not None:  # postgres refuses to run as root
        for path in (folder, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    auth = ["--auth=trust"]
    if password is not None:
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n")
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", *auth, "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    query = ""
    if tls is not None:
        for source, name in ((tls.cert, "server.crt"), (tls.key, "server.key")):
            target = data / name
            shutil.copy(source, target)
            target.chmod(0o600)
            if owner is not None:
                os.chown(target, owner.pw_uid, owner.pw_gid)
        options += " -c ssl=on"
        query = f"?sslmode=verify-full&sslrootcert={tls.ca}"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(logfile), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    login = f"postgres:{password}" if password is not None else "postgres"
    try:
        yield f"postgresql+psycopg://{login}@127.0.0.1:{port}/postgres{query}"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
        )


@contextmanager
def throwaway_postgres(prefix: str = "runyard-pg-") -> Iterator[str]:
    """``postgres_server`` in a fresh temporary folder, removed afterwards; yields its URL.
    Not under pytest's (or any private) temporary folder: those are 0700 root, and the
    server runs as the postgres user."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    try:
        with postgres_server(folder / "server") as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _pg_binary(name: str) -> str | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def runyard(*args: str) -> list[str]:
    return [sys.executable, "-m", "runyard", *args]


# Fast liveness so node-loss tests finish in seconds; production defaults are 1/5/10 s.
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
    extra_env: dict[str, str] = field(default_factory=dict)  # settings a test module changes
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
            RUNYARD_BOOTSTRAP_ADMIN_TOKEN=ADMIN_TOKEN,
            RUNYARD_TOKEN=ADMIN_TOKEN,
        )
        if self.database_url:
            env["RUNYARD_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def client(self, token: str = ADMIN_TOKEN) -> Client:
        return Client(self.url, token)

    def make_token(self, role: str, *clusters: str, name: str | None = None) -> str:
        spec = {"name": name or unique(role), "role": role, "clusters": list(clusters)}
        secret = self.client().create_token(**spec)["token"]
        ISSUED_SECRETS.add(secret)
        return secret

    def log_files(self) -> list[Path]:
        return sorted(self.root.glob("*.log"))

    def start(self) -> None:
        self.start_api()
        self.start_scheduler()

    def start_api(self) -> None:
        """The API alone, once it answers (no scheduler: what is queued stays queued)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._spawn(runyard("api", "--host", self.host, "--port", str(self.port)), "api.log")
        wait_until(self._healthy, 30, 0.1, what="the API")

    def start_scheduler(self) -> subprocess.Popen:  # type: ignore[type-arg]
        return self._spawn(runyard("scheduler"), "scheduler.log")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _spawn(
        self, command: list[str], log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:  # type: ignore[type-arg]
        out = open(self.root / log, "ab")  # noqa: SIM115 (kept open for the child)
        process = subprocess.Popen(
            command,
            env=env or self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_worker(
        self,
        *clusters: str,
        slots: int = 1,
        name: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> subprocess.Popen:  # type: ignore[type-arg]
        """A worker of these clusters; ``prefix`` runs it through a command (on another
        network host, say), ``env`` adds to or overrides the stack's settings."""
        name = name or f"w-{secrets.token_hex(3)}"
        args = ["worker", "--slots", str(slots), "--name", name]
        for cluster in clusters:
            args += ["--cluster", cluster]
        # A worker holds a worker token bound to the clusters it serves, as in production.
        token = self.make_token("worker", *clusters, name=name)
        env = {**self.env, **(env or {}), "RUNYARD_TOKEN": token}
        env.pop("RUNYARD_BOOTSTRAP_ADMIN_TOKEN")
        process = self._spawn([*prefix, *runyard(*args)], f"worker-{name}.log", env)
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

RUN_IMAGE_REPOSITORY = "runyard-run-base"
RUN_IMAGE = f"{RUN_IMAGE_REPOSITORY}:bookworm"
# The oldest Python a run's image may have (README, docs/operations.md): Debian 11's 3.9.
# Debian 11 is the oldest release still on Debian's mirror (10, with 3.7, has left it, and
# no registry reachable here serves a 3.8), so it is the oldest Python that can be checked.
OLDEST_PYTHON = (3, 9)
OLDEST_PYTHON_RELEASE = "bullseye"


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


def ensure_run_image(folder: Path, release: str = "bookworm") -> str:
    """A small Debian ``release`` with its Python 3 (no registry here: built with debootstrap
    from Debian's mirror, cached by tag, so only the first test session pays for it)."""
    tag = f"{RUN_IMAGE_REPOSITORY}:{release}"
    found = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    if found.returncode == 0:
        return tag
    rootfs = folder / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3", release, str(rootfs)],
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
