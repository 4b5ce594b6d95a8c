"""The worker process: a Celery worker on its clusters' queues, running one run per slot.

Slots are threads (``-P threads``): each slot only supervises a child process, so threads
keep the worker light and let one heartbeat speak for all of its runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path

import redis
from celery.signals import worker_ready, worker_shutdown
from celery.worker.request import Request

import runyard
from protocol import keys
from protocol.celery_app import TASK_EXECUTE_RUN, make_celery
from protocol.environments import EXECUTORS
from protocol.messages import RunAssignment, Wake
from protocol.settings import Settings
from protocol.streams import agree_on_shards, send_to_ingest
from runyard.client import Client
from runyard.config import redact_url
from worker.environments.config import BuildConfig
from worker.executors import Node
from worker.heartbeat import Heartbeat
from worker.runner import WorkerContext, execute, recover_leftovers, stop_at_once
from worker.slots import SlotPool
from worker.stopping import WorkerStop
from worker.workspace import Workspace

log = logging.getLogger(__name__)
PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def service_id(redis_url: str) -> str:
    """The deployment a worker belongs to: its broker's address (no password), hashed."""
    return hashlib.sha256(redact_url(redis_url).encode()).hexdigest()[:16]


def copy_sdk(target: Path) -> Path:
    """A copy of the runyard package that containers mount read-only: any image with
    Python 3.9+ can then import it without installing anything."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        Path(runyard.__file__).parent,
        target / "runyard",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "cli"),
    )
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def hide_credentials() -> None:
    """Local-executor runs share this process's uid, and /proc/<pid>/environ would show them
    its token and Redis URL. A non-dumpable process's /proc files belong to root, so they
    cannot (ptrace is refused to them as well). Linux only; elsewhere a no-op."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("could not make the worker non-dumpable: errno %s", ctypes.get_errno())


def hide_task_arguments() -> None:
    """Answer Celery's inspect commands with what the scheduler chose to show of a task.

    A run's task carries its assignment: script arguments and environment variables. Celery
    shows the argsrepr the scheduler sets (scheduler/admission.py: send) in its events and
    in `inspect active`, but answers `inspect reserved`, `scheduled` and `query_task`
    (Flower's worker page asks for the first two) with the decoded arguments. Here every
    answer takes the shown form. Idempotent."""
    if getattr(Request.info, "runyard_shown_only", False):
        return
    decoded = Request.info

    def info(self: Request, safe: bool = False) -> dict:
        return decoded(self, safe=True)

    info.runyard_shown_only = True  # type: ignore[attr-defined]
    Request.info = info  # type: ignore[method-assign]


def run_worker(
    settings: Settings,
    clusters: list[str],
    slots: int,
    worker_id: str | None = None,
    gpus: list[str] | None = None,
    executors: tuple[str, ...] = EXECUTORS,
) -> None:
    """Serve the clusters until told to stop (blocks)."""
    hide_credentials()
    hide_task_arguments()
    worker_id = worker_id or default_worker_id()
    client = redis.Redis.from_url(settings.redis_url)
    agree_on_shards(client)
    root = settings.worker_dir / worker_id
    workspace = Workspace(root, Client(settings.api_url))
    node = Node(
        worker_id=worker_id,
        sdk_dir=copy_sdk(root / "sdk"),
        executors=executors,
        service=service_id(settings.redis_url),
        run_as=settings.run_as,
        builds=BuildConfig.from_settings(settings, client),
    )
    heartbeat = Heartbeat(
        client,
        worker_id,
        clusters,
        slots,
        interval=settings.heartbeat_interval,
        ttl=settings.not_responding_after,
        gpus=len(gpus or []),
    )
    ctx = WorkerContext(
        worker_id=worker_id,
        redis=client,
        api=workspace.api,
        workspace=workspace,
        heartbeat=heartbeat,
        node=node,
        slots=SlotPool(slots, gpus),
    )
    ctx.stopping.on_force = lambda runs: stop_at_once(ctx, runs)
    # A previous life of this worker (same id) may have left runs behind; a drain asked of
    # it does not outlive it (a restarted worker serves again).
    recover_leftovers(ctx)
    client.delete(keys.worker_drain(worker_id))
    app = make_celery(settings.redis_url)

    @app.task(name=TASK_EXECUTE_RUN, acks_late=True, ignore_result=True)
    def execute_run(payload: dict) -> None:
        execute(RunAssignment.decode(payload), ctx)

    hostname = f"{worker_id}@{socket.gethostname()}"

    def stop_consuming() -> None:
        """Drained: leave the cluster queues (the runs in hand finish as usual)."""
        for cluster in clusters:
            app.control.cancel_consumer(keys.cluster_queue(cluster), destination=[hostname])

    heartbeat.on_drain.append(stop_consuming)

    def on_ready(**_: object) -> None:
        handle_stop_signals(ctx.stopping, heartbeat)
        heartbeat.start()
        send_to_ingest(client, [Wake(cluster=c) for c in clusters])
        log.info("worker %s serving %s with %d slot(s)", worker_id, ", ".join(clusters), slots)

    def on_shutdown(**_: object) -> None:
        heartbeat.stop()

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(keys.cluster_queue(c) for c in clusters),
            "--concurrency",
            str(slots),
            "--pool",
            "threads",
            "--prefetch-multiplier",
            "1",
            "--hostname",
            hostname,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ]
    )


def handle_stop_signals(stop: WorkerStop, heartbeat: Heartbeat) -> None:
    """Take SIGTERM and Ctrl+C over from Celery (call once it has set its own handlers up).

    Celery's warm shutdown waits for the runs in hand to end by themselves, however long they
    train. Here the first signal stops them (each within its grace period, recorded), and
    Celery's warm shutdown then only waits for that; a second signal, or SIGQUIT, stops at
    once. See ``worker.stopping``.
    """
    warm_shutdown = signal.getsignal(signal.SIGTERM)  # Celery's
    if getattr(warm_shutdown, "runyard_stop", False):
        return  # already ours (Celery announced ready twice)

    def on_signal(signum: int, frame: object) -> None:
        if signum != signal.SIGQUIT and stop.begin():
            heartbeat.draining = True  # its slots are no longer offered
            if callable(warm_shutdown):
                warm_shutdown(signal.SIGTERM, frame)
        else:
            name = signal.Signals(signum).name
            stop.force(name if signum == signal.SIGQUIT else f"a second {name}")

    on_signal.runyard_stop = True  # type: ignore[attr-defined]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
