"""``runyard up``: the whole service on one machine, as child processes.

Redis (started here when no URL is given), the API, the scheduler, and one local worker per
cluster sized to its node limit. Clusters created, resized or deleted while it runs are
picked up within ``RECONCILE_INTERVAL``.

Supervision. A child that exits on its own is started again after a backoff that doubles
with each quick death (one log line each time); one that keeps dying within
``STABLE_AFTER`` of its start, ``GIVE_UP_AFTER`` times in a row, stops the whole stack with
an error. No child outlives ``runyard up``, however it dies: each is started with
``PR_SET_PDEATHSIG``.

Stopping (SIGTERM, Ctrl+C). Workers first: each stops its runs within their cluster's
cancel grace period and records them (``worker.stopping``); then the scheduler, once it has
written what they reported, the API, and Redis last. All of it within the largest cancel
grace period + ``STOP_MARGIN``; whatever is still running then is killed. A second signal
stops at once: workers kill and record their runs, everything else is killed.

The stack's start, supervision and ordered stop stay in one class (a little over 400 lines),
since each step reads the state the others leave; one child process and its ports are
``runyard.cli.children``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from protocol import barriers
from protocol.streams import send_to_ingest
from protocol.workers import live_workers, request_drain
from runyard import config
from runyard.cli.children import Child, free_port, port_in_use, wait_for_port
from runyard.client import Client
from runyard.config import redact_url
from runyard.errors import ConfigurationError, RunyardError, ServiceUnavailable, Unauthorized
from runyard.tracking import contract
from store import tokens
from worker import stopping as worker_stopping

log = logging.getLogger("runyard.up")

RECONCILE_INTERVAL = 2.0  # seconds between looks at the clusters (workers to start or retire)
REDIS_MAXMEMORY = os.environ.get("RUNYARD_REDIS_MAXMEMORY", "1gb")  # of the Redis it starts
SUPERVISE_INTERVAL = 0.2  # seconds between looks at the children
STARTUP_TIMEOUT = 60.0
API_TIMEOUT = 5.0  # `up`'s own requests to the API

# A child that dies is restarted after FIRST_BACKOFF, doubled for each death in a row that
# came within STABLE_AFTER of its start (at most MAX_BACKOFF); the GIVE_UP_AFTER-th such
# death in a row stops everything.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0
GIVE_UP_AFTER = 6

# Stopping: everything is gone within the largest cancel grace period + STOP_MARGIN. Workers
# get until grace + WORKERS_MARGIN (one past its own deadline stops at once by itself); the
# rest shares what is left.
STOP_MARGIN = 10.0
WORKERS_MARGIN = worker_stopping.STOP_MARGIN + worker_stopping.FORCE_SECONDS + 0.5
FORCED_WAIT = 3.0  # on a second signal: what workers get to kill and record their runs
FORCED_RECORD = 2.0  # ... and what the scheduler then gets to write those records
REDIS_RESERVE = 1.0  # Redis stops last; it gets the end of the budget


@dataclass
class LocalStack:
    host: str
    port: int
    data_dir: Path
    redis_url: str | None = None
    clusters_file: Path | None = None
    children: dict[str, Child] = field(default_factory=dict)
    # Workers of a cluster resized or deleted: drained, stopped once they hold no run.
    retiring: list[Child] = field(default_factory=list)
    generation: int = 0
    stop_requested: float | None = None  # when the first SIGTERM / Ctrl+C came
    forced: bool = False  # a second one came: stop at once
    max_grace: float = 0.0  # the largest cancel grace period of the clusters
    worker_token: str = ""  # made each start, for this start's workers; revoked at stop
    token_file: str = ""  # where the admin token is kept (the credentials file)
    redis: redis.Redis | None = None

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def stopping(self) -> bool:
        return self.stop_requested is not None

    def run(self) -> None:
        if port_in_use(self.host, self.port):
            raise ConfigurationError(f"port {self.port} on {self.host} is in use; pick --port")
        if self.clusters_file is not None:
            _check_clusters_file(self.clusters_file)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Working folders of the local workers of an earlier `up`: their runs died with it.
        for stale in (self.data_dir / "worker").glob("local-*"):
            shutil.rmtree(stale, ignore_errors=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            redis_url = self.redis_url or self._start_redis()
            self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
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
            self._add("api", ["api", "--host", self.host, "--port", str(self.port)]).start()
            api = Client(self.api_url, admin_token, timeout=API_TIMEOUT)
            if not self._wait_for_api(api):
                return
            self._check_admin(api, config_path)
            self._add("scheduler", ["scheduler"]).start()
            print(f"Runyard API listening on {self.api_url}  (data in {self.data_dir})", flush=True)
            what = "a new admin token" if fresh else "the admin token"
            print(f"Client config: {config_path}; {what} in {self.token_file} (mode 0600)",
                  flush=True)  # fmt: skip
            print(f"Redis at {redact_url(redis_url)}; press Ctrl+C to stop.", flush=True)
            next_reconcile = 0.0
            while not self.stopping:
                self._supervise()
                if time.monotonic() >= next_reconcile:
                    self._reconcile_workers(api)
                    next_reconcile = time.monotonic() + RECONCILE_INTERVAL
                self._sleep(SUPERVISE_INTERVAL)
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
            api.whoami()
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
        port = free_port()
        folder = self.data_dir / "redis"
        folder.mkdir(exist_ok=True)
        # A password for this start (in an owner-only file, never on a command line), and
        # a memory ceiling that never evicts queue or stream data: writes fail loudly when
        # full, and the runs' budgets keep any one run far from it.
        password = secrets.token_urlsafe(24)
        conf = folder / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                f'port {port}\nbind 127.0.0.1\ndir {folder}\nappendonly yes\nsave ""\n'
                f"requirepass {password}\nmaxmemory {REDIS_MAXMEMORY}\n"
                "maxmemory-policy noeviction\n"
            )
        # SIGTERM if `up` dies: Redis then writes its append-only file out before it exits.
        child = Child("redis", [binary, str(conf)], death_signal=signal.SIGTERM, quiet=True)
        self.children["redis"] = child
        child.start()
        wait_for_port(port)
        return f"redis://:{password}@127.0.0.1:{port}/0"

    def _add(self, name: str, args: list[str], worker_id: str = "", nodes: int = 0) -> Child:
        env = self.env
        if worker_id:  # a worker holds its own token, and no bootstrap ones
            env = {k: v for k, v in env.items() if not k.startswith("RUNYARD_BOOTSTRAP_")}
            env[contract.TOKEN] = self.worker_token
        command = [sys.executable, "-m", "runyard", *args]
        child = Child(name, command, env, worker_id=worker_id, nodes=nodes)
        self.children[name] = child
        return child

    def _wait_for_api(self, api: Client) -> bool:
        """Until the API answers (True), or a stop is asked for (False)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and not self.stopping:
            self._check_started()
            try:
                api.health(timeout=2)
                return True
            except Exception:
                time.sleep(0.2)
        if self.stopping:
            return False
        raise ServiceUnavailable(f"the API did not come up on {self.api_url}")

    def _check_started(self) -> None:
        """While starting, a child that exits is an error (a bad setting, a port taken)."""
        for child in self.children.values():
            code = child.process.poll() if child.process is not None else None
            if code is not None:
                raise ServiceUnavailable(f"{child.name} exited with code {code}")

    def _supervise(self) -> None:
        """Start again what died (after its backoff); give up on what keeps dying fast."""
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.process is None:
                if child.restart_at is not None and now >= child.restart_at:
                    child.start()
                continue
            code = child.process.poll()
            if code is None:
                continue
            child.deaths = child.deaths + 1 if now - child.started < STABLE_AFTER else 1
            if child.deaths >= GIVE_UP_AFTER:
                raise ServiceUnavailable(
                    f"{child.name} exited with code {code}, {child.deaths} times in a row "
                    f"within {STABLE_AFTER:g} s of starting; giving up"
                )
            delay = min(FIRST_BACKOFF * 2 ** (child.deaths - 1), MAX_BACKOFF)
            log.warning("%s exited with code %s; restarting it in %g s", child.name, code, delay)
            child.process = None
            child.restart_at = now + delay

    def _reconcile_workers(self, api: Client) -> None:
        try:
            clusters = api.list_clusters()
        except RunyardError as exc:
            log.warning("cannot list clusters: %s", exc)
            return
        self.max_grace = max((float(c["cancel_grace_seconds"]) for c in clusters), default=0.0)
        wanted = {f"worker:{c['name']}": c["nodes"] for c in clusters}
        for key in [k for k in self.children if k.startswith("worker:")]:
            if wanted.get(key) != self.children[key].nodes:
                self._retire(key)  # deleted, or resized: drained, then a new one
        for key, nodes in wanted.items():
            if key not in self.children:
                cluster = key.split(":", 1)[1]
                self.generation += 1
                name = f"local-{cluster}-{self.generation}"
                args = ["worker", "--cluster", cluster, "--slots", str(nodes), "--name", name]
                self._add(key, args, worker_id=name, nodes=nodes).start()
        self._stop_idle_retirees()

    def _retire(self, key: str) -> None:
        """A worker no longer wanted finishes its runs, takes no new ones, then stops."""
        child = self.children.pop(key)
        if child.running():
            try:
                request_drain(self._redis(), child.worker_id)
            except redis.RedisError as exc:
                log.warning("cannot drain %s: %s", child.worker_id, exc)
            self.retiring.append(child)

    def _stop_idle_retirees(self) -> None:
        self.retiring = [c for c in self.retiring if c.running()]
        waiting = [c for c in self.retiring if not c.signalled]
        if not waiting:
            return
        try:
            heard = {w.id: w for w in live_workers(self._redis())}
        except redis.RedisError:
            return
        for child in waiting:
            info = heard.get(child.worker_id)
            if info is None or (info.draining and not info.runs):
                child.send(signal.SIGTERM)  # no run in hand: it exits at once
                child.signalled = True

    def _redis(self) -> redis.Redis:
        assert self.redis is not None
        return self.redis

    # --- stopping ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Workers first (together), then the scheduler and the API, Redis last; everything
        within the largest cancel grace period + STOP_MARGIN of the stop being asked for."""
        if self.stop_requested is not None:  # asked for (else: an error, said by the caller)
            print(
                f"Stopping: runs get their cluster's grace period (at most {self.max_grace:g} s),"
                f" everything stops within {self.max_grace + STOP_MARGIN:g} s; "
                "press Ctrl+C again to stop at once.",
                flush=True,
            )
        began = self.stop_requested or time.monotonic()
        self.stop_requested = began
        deadline = began + self.max_grace + STOP_MARGIN
        workers = [c for k, c in self.children.items() if k.startswith("worker:")]
        workers = [c for c in [*workers, *self.retiring] if c.running()]
        for child in workers:
            if not child.signalled:
                child.send(signal.SIGTERM)
                child.signalled = True
        self._wait(workers, began + self.max_grace + WORKERS_MARGIN, interruptible=True)
        if self.forced:
            print("Stopping at once.", flush=True)
            for child in workers:
                child.send(signal.SIGQUIT)  # a worker kills and records its runs, and exits
            self._kill(self.children.get("api"))
            self._wait(workers, min(time.monotonic() + FORCED_WAIT, deadline))
        for child in workers:
            if child.running():
                log.warning("%s did not stop in time; killing it", child.name)
                self._kill(child)
        rest = [self.children.get(n) for n in ("scheduler", "api")]
        others = [c for c in rest if c is not None and c.running()]
        until = deadline - REDIS_RESERVE
        if self.forced:
            until = min(time.monotonic() + FORCED_RECORD, until)
        self._let_scheduler_record(until)
        self._revoke_worker_token(until)
        for child in others:
            child.send(signal.SIGKILL if self.forced else signal.SIGTERM)
        self._wait(others, until, interruptible=True)
        for child in others:
            self._kill(child)
        own_redis = self.children.get("redis")
        if own_redis is not None and own_redis.running():
            own_redis.send(signal.SIGTERM)  # it writes its append-only file and exits
            self._wait(
                [own_redis], min(time.monotonic() + 1.0, deadline) if self.forced else deadline
            )
            self._kill(own_redis)

    def _wait(self, children: Iterable[Child], until: float, interruptible: bool = False) -> None:
        """Until these children have exited or ``until`` comes (or, if interruptible, a
        second signal has)."""
        while any(c.running() for c in children) and time.monotonic() < until:
            if interruptible and self.forced:
                return
            time.sleep(0.05)

    def _kill(self, child: Child | None) -> None:
        if child is not None and child.running():
            assert child.process is not None
            child.process.kill()
            child.process.wait()

    def _let_scheduler_record(self, until: float) -> None:
        """Wait until the scheduler has written what the workers reported before they
        exited (their runs' last states), so the database has it before it stops."""
        scheduler = self.children.get("scheduler")
        if scheduler is None or not scheduler.running() or self.redis is None:
            return
        barrier = barriers.new()
        forced = self.forced
        try:
            send_to_ingest(self.redis, [barrier])
            # In short waits, so a second signal is not kept waiting.
            while not barriers.wait(self.redis, barrier, timeout=0.25):
                if time.monotonic() >= until or self.forced != forced:
                    log.warning("the scheduler did not record the workers' last reports in time")
                    return
        except redis.RedisError as exc:
            log.warning("cannot wait for the scheduler to record the last reports: %s", exc)

    def _revoke_worker_token(self, until: float) -> None:
        """This start's worker token dies with it (best effort: the API may be gone)."""
        api = self.children.get("api")
        if not self.worker_token or api is None or not api.running():
            return
        timeout = max(min(until - time.monotonic(), API_TIMEOUT), 0.5)
        try:
            me = Client(self.api_url, self.worker_token, timeout=timeout).whoami()
            admin = Client(self.api_url, self.env["RUNYARD_BOOTSTRAP_ADMIN_TOKEN"], timeout=timeout)
            admin.revoke_token(me["token_id"])
        except RunyardError as exc:
            log.warning("could not revoke this start's worker token: %s", exc.message)

    def _on_signal(self, *_: object) -> None:
        if self.stop_requested is None:
            self.stop_requested = time.monotonic()
        else:
            self.forced = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))


def _check_clusters_file(path: Path) -> None:
    """Fail here, in one line, rather than in the API's start-up."""
    import tomllib

    try:
        tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read clusters file {path}: {exc}") from exc
