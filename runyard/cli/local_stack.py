"""``runyard up``: the whole service on one machine, as child processes.

Redis (started here when no URL is given), the API, the scheduler, and one local worker per
cluster sized to its node limit. Clusters created, resized or deleted while it runs are
picked up within ``RECONCILE_INTERVAL``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runyard import config
from runyard.client import Client
from runyard.config import redact_url
from runyard.errors import ConfigurationError, RunyardError, ServiceUnavailable, Unauthorized
from scheduler import tokens

log = logging.getLogger("runyard.up")

RECONCILE_INTERVAL = 2.0
STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 60.0  # a worker's runs get this long to finish (then they are killed)


@dataclass
class LocalStack:
    host: str
    port: int
    data_dir: Path
    redis_url: str | None = None
    clusters_file: Path | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_nodes: dict[str, int] = field(default_factory=dict)
    # Workers told to stop (a cluster resized or deleted) finishing their runs.
    retiring: list[subprocess.Popen[bytes]] = field(default_factory=list)
    generation: int = 0
    stopping: bool = False
    worker_token: str = ""  # made each start, for this start's workers; revoked at stop
    token_file: str = ""  # where the admin token is kept (the credentials file)

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        if _port_in_use(self.host, self.port):
            raise ConfigurationError(f"port {self.port} on {self.host} is in use; pick --port")
        if self.clusters_file is not None:
            _check_clusters_file(self.clusters_file)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Working folders of the local workers of an earlier `up`: their runs died with it.
        for stale in (self.data_dir / "worker").glob("local-*"):
            shutil.rmtree(stale, ignore_errors=True)
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        try:
            redis_url = self.redis_url or self._start_redis()
            admin_token, config_path, fresh = self._client_config()
            self.worker_token = tokens.TOKEN_PREFIX + secrets.token_urlsafe(32)
            env = {
                **os.environ,
                "RUNYARD_DATA_DIR": str(self.data_dir),
                "RUNYARD_REDIS_URL": redis_url,
                "RUNYARD_API_URL": self.api_url,
                "RUNYARD_BOOTSTRAP_ADMIN_TOKEN": admin_token,
                "RUNYARD_BOOTSTRAP_WORKER_TOKEN": self.worker_token,
            }
            if self.clusters_file:
                env["RUNYARD_CLUSTERS_FILE"] = str(self.clusters_file)
            self.env = env
            self._spawn("api", ["api", "--host", self.host, "--port", str(self.port)])
            api = Client(self.api_url, admin_token)
            self._wait_for_api(api)
            self._check_admin(api, config_path)
            self._spawn("scheduler", ["scheduler"])
            print(f"Runyard API listening on {self.api_url}  (data in {self.data_dir})", flush=True)
            what = "a new admin token" if fresh else "the admin token"
            print(f"Client config: {config_path}; {what} in {self.token_file} (mode 0600)",
                  flush=True)  # fmt: skip
            print(f"Redis at {redact_url(redis_url)}; press Ctrl+C to stop.", flush=True)
            while not self.stopping:
                self._check_children()
                self._reconcile_workers(api)
                self._sleep(RECONCILE_INTERVAL)
        finally:
            self.shutdown()

    def _client_config(self) -> tuple[str, Path, bool]:
        """The admin token of this data folder: made on first start, kept on later starts.
        The SDK and CLI find the URL in ``<data>/config.json`` and the token for it in the
        user's credentials file (mode 0600), out of the project folder (runyard.config)."""
        path = self.data_dir / "config.json"
        token, fresh, saved = config.local_stack_token(
            self.data_dir, self.api_url, lambda: tokens.TOKEN_PREFIX + secrets.token_urlsafe(32)
        )
        self.token_file = str(saved or path)
        return token, path, fresh

    def _check_admin(self, api: Client, config_path: Path) -> None:
        try:
            api.json("GET", "/whoami")
        except Unauthorized as exc:
            raise ConfigurationError(
                f"the admin token kept for {self.data_dir} in {self.token_file} is not "
                f"accepted ({exc.message}); remove it there (and any 'token' in {config_path}) "
                "and run `runyard up` again to make a new admin token"
            ) from None

    def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigurationError(
                "no --redis-url given and no redis-server on PATH; "
                "install redis (apt-get install redis-server) or pass --redis-url"
            )
        port = _free_port()
        folder = self.data_dir / "redis"
        folder.mkdir(exist_ok=True)
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--save",
            "",
        ]
        self.children["redis"] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, start_new_session=True
        )
        _wait_for_port(port)
        return f"redis://127.0.0.1:{port}/0"

    def _spawn(self, name: str, args: list[str]) -> None:
        command = [sys.executable, "-m", "runyard", *args]
        env = self.env
        if name.startswith("worker:"):  # a worker holds its own token, and no bootstrap ones
            env = {k: v for k, v in env.items() if not k.startswith("RUNYARD_BOOTSTRAP_")}
            env["RUNYARD_TOKEN"] = self.worker_token
        # Own sessions: Ctrl+C reaches `up` alone, which then stops them in order.
        self.children[name] = subprocess.Popen(command, env=env, start_new_session=True)

    def _wait_for_api(self, api: Client) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._check_children()
            try:
                api.request("GET", "/healthz", api=False, timeout=2)
                return
            except Exception:
                time.sleep(0.2)
        raise ServiceUnavailable(f"the API did not come up on {self.api_url}")

    def _check_children(self) -> None:
        for name, child in list(self.children.items()):
            code = child.poll()
            if code is None:
                continue
            if name.startswith("worker:"):
                log.warning("%s exited with %s; it will be restarted", name, code)
                del self.children[name]
                self.worker_nodes.pop(name, None)
            elif not self.stopping:
                raise ServiceUnavailable(f"{name} exited with code {code}")

    def _reconcile_workers(self, api: Client) -> None:
        try:
            clusters = {c["name"]: c["nodes"] for c in api.list_clusters()}
        except RunyardError as exc:
            log.warning("cannot list clusters: %s", exc)
            return
        wanted = {f"worker:{name}": nodes for name, nodes in clusters.items()}
        for key in list(self.worker_nodes):
            if wanted.get(key) != self.worker_nodes[key]:
                self._stop_child(key)  # deleted, or resized: warm shutdown, then respawn
        for key, nodes in wanted.items():
            if key not in self.children:
                cluster = key.split(":", 1)[1]
                self.generation += 1
                name = f"local-{cluster}-{self.generation}"
                args = ["worker", "--cluster", cluster, "--slots", str(nodes), "--name", name]
                self._spawn(key, args)
                self.worker_nodes[key] = nodes
        self.retiring = [w for w in self.retiring if w.poll() is None]

    def _stop_child(self, name: str) -> None:
        """Ask a child to stop (a worker finishes its runs first) and keep track of it."""
        child = self.children.pop(name, None)
        self.worker_nodes.pop(name, None)
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            self.retiring.append(child)

    def shutdown(self) -> None:
        """Workers first (together), then the scheduler, the API and Redis last."""
        self.stopping = True
        for name in [n for n in self.children if n.startswith("worker:")]:
            self._stop_child(name)
        _wait_all(self.retiring, SHUTDOWN_TIMEOUT)
        self._revoke_worker_token()
        for name in ("scheduler", "api", "redis"):
            child = self.children.pop(name, None)
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
                _wait_all([child], SHUTDOWN_TIMEOUT)

    def _revoke_worker_token(self) -> None:
        """This start's worker token dies with it (best effort: the API may be gone)."""
        if not self.worker_token or "api" not in self.children:
            return
        try:
            token_id = Client(self.api_url, self.worker_token).json("GET", "/whoami")["token_id"]
            admin = Client(self.api_url, self.env["RUNYARD_BOOTSTRAP_ADMIN_TOKEN"])
            admin.json("POST", f"/tokens/{token_id}/revoke")
        except RunyardError as exc:
            log.warning("could not revoke this start's worker token: %s", exc.message)

    def _request_stop(self, *_: object) -> None:
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.1)


def _wait_all(children: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "::") else host, port)) == 0


def _check_clusters_file(path: Path) -> None:
    """Fail here, in one line, rather than in the API's start-up."""
    import tomllib

    try:
        tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read clusters file {path}: {exc}") from exc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceUnavailable(f"redis-server did not start on port {port}")
