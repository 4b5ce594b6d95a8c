"""Executing one run on this worker: claim, prepare, start, pump output, stop, finalize."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis

from runyard.client import Client
from runyard.errors import RequestTooLarge, RunyardError
from runyard.status import RunStatus
from scheduler import control
from scheduler.budgets import RunBudgets
from scheduler.messages import RunAssignment
from scheduler.workers import live_workers
from worker import delivery
from worker.channel import ChannelForwarder
from worker.executors import Execution, ExecutionRequest, Node, executor_named
from worker.heartbeat import Heartbeat
from worker.reporter import RunReporter
from worker.run_folder import RunFolder
from worker.slots import SlotPool
from worker.workspace import Workspace

log = logging.getLogger(__name__)

CANCEL_POLL = 0.2  # seconds between looks at the run's cancel mark
PUMP_JOIN = 5.0  # how long to wait for the last output once the process has exited


@dataclass
class WorkerContext:
    worker_id: str
    redis: redis.Redis
    api: Client
    workspace: Workspace
    heartbeat: Heartbeat
    node: Node
    slots: SlotPool


def execute(assignment: RunAssignment, ctx: WorkerContext) -> None:
    run_id = assignment.run_id
    claim = control.claim_run(ctx.redis, run_id, ctx.worker_id, assignment.attempt)
    if claim != control.ClaimResult.CLAIMED:
        why = "cancelled before it started" if claim == control.ClaimResult.CANCELED else "taken"
        log.info("not starting %s: %s", run_id, why)
        return
    ctx.heartbeat.add_run(run_id)
    budgets = RunBudgets.of(assignment.budgets)
    reporter = RunReporter(ctx.redis, run_id, ctx.worker_id, assignment.attempt, budgets)
    execution: Execution | None = None
    channel: ChannelForwarder | None = None
    folder: RunFolder | None = None
    slot = ctx.slots.acquire()
    try:
        reporter.state(RunStatus.PREPARING)
        executor = executor_named(assignment.executor, ctx.node)
        workdir = ctx.workspace.prepare(run_id, assignment.snapshot_digest)
        # Opened while the folders are still the worker's own: every later read goes
        # through these descriptors, never by a path the run could have swapped.
        folder = RunFolder.create(workdir, ctx.workspace.tracking_dir(run_id))
        channel = ChannelForwarder(
            ctx.redis, ctx.api, run_id, folder, assignment.attempt, budgets, note=reporter.write
        )
        channel.listen()
        request = ExecutionRequest(
            run_id=run_id,
            script=assignment.script,
            arguments=assignment.arguments,
            environment=assignment.environment,
            working_dir=workdir,
            tracking_dir=ctx.workspace.tracking_dir(run_id),
            context_env={
                "RUNYARD_RUN_ID": run_id,
                "RUNYARD_CLUSTER": assignment.cluster,
                "RUNYARD_EXPERIMENT": assignment.experiment,
                "RUNYARD_URL": ctx.api.base_url,
                "RUNYARD_TOKEN": ctx.api.run_token(run_id, assignment.attempt),
            },
            container=assignment.container,
            gpu_ids=ctx.slots.gpus(slot),
        )
        executor.prepare(request)
        if control.is_cancel_requested(ctx.redis, run_id, assignment.attempt):
            reporter.state(RunStatus.CANCELED, reason="canceled before it started")
            return
        reporter.state(RunStatus.STARTING)
        execution = executor.start(request)
        ctx.workspace.remember(run_id, assignment.executor, execution.handle, assignment)
        reporter.state(RunStatus.RUNNING)
        channel.start()
        try:
            exit_code, stopped = _supervise(
                execution, reporter, ctx, assignment, lambda: channel_breach(channel, reporter)
            )
        finally:
            channel.stop()  # every event the run wrote is on its way before it ends
        if stopped is None and channel_breach(channel, reporter) is not None:
            stopped = OVER_BUDGET  # it went over while its last output was forwarded
        reporter.state(RunStatus.FINALIZING)
        refused = _upload_outputs(ctx, folder, run_id, reporter)
        if stopped == CANCELED:
            reporter.state(RunStatus.CANCELED, exit_code=exit_code, reason="canceled by request")
        elif stopped == OVER_BUDGET:
            reason = channel_breach(channel, reporter)
            reporter.state(RunStatus.FAILED, exit_code=exit_code, reason=f"stopped: {reason}")
        elif stopped == TIMED_OUT:
            limit = assignment.max_run_duration_seconds
            reason = f"ran longer than max_run_duration_seconds ({limit:g} s); stopped"
            reporter.state(RunStatus.FAILED, exit_code=exit_code, reason=reason)
        elif exit_code != 0:
            reason = execution.failure_reason(exit_code) or describe_exit(exit_code)
            reporter.state(RunStatus.FAILED, exit_code=exit_code, reason=reason)
        elif channel.failure is not None:
            reporter.state(RunStatus.FAILED, exit_code=0, reason=channel.failure)
        elif refused is not None:
            reporter.state(RunStatus.FAILED, exit_code=0, reason=refused)
        else:
            reporter.state(RunStatus.COMPLETED, exit_code=0)
    except (RunyardError, OSError, ValueError) as exc:
        log.warning("run %s failed on this worker: %s", run_id, exc)
        reporter.state(RunStatus.FAILED, reason=str(exc))
    except Exception as exc:
        log.exception("run %s: unexpected worker error", run_id)
        reporter.state(RunStatus.FAILED, reason=f"worker error: {exc!r}")
    finally:
        if channel is not None:
            channel.close()
        if folder is not None:
            folder.close()
        if execution is not None:
            execution.cleanup()
        ctx.slots.release(slot)
        ctx.heartbeat.remove_run(run_id)
        ctx.workspace.discard(run_id)


def recover_leftovers(ctx: WorkerContext) -> None:
    """Runs this worker held when it was killed: stop what is left, report them failed."""
    for left in ctx.workspace.leftovers():
        run_id = left.run_id
        if left.executor and left.handle:
            try:
                executor_named(left.executor, ctx.node).kill_leftover(run_id, left.handle)
            except RunyardError as exc:
                log.warning("cannot stop leftover of %s: %s", run_id, exc)
        # What it logged before the worker died still counts (and counts once).
        folder = RunFolder.reopen(ctx.workspace.run_dir(run_id))
        try:
            ChannelForwarder(ctx.redis, ctx.api, run_id, folder, left.attempt).drain()
        finally:
            folder.close()
        if not left.requeue:
            RunReporter(ctx.redis, run_id, ctx.worker_id, left.attempt).state(
                RunStatus.FAILED, reason="worker restarted while the run was active"
            )
        # else: silence makes the watchdog requeue it, as the cluster asks
        ctx.workspace.discard(run_id)
        log.info("cleaned up %s left by a previous life of this worker", run_id)
    _remove_orphan_containers(ctx)


def _remove_orphan_containers(ctx: WorkerContext) -> None:
    """Containers this worker id started whose run folder is gone (a crash in between)."""
    try:
        docker_executor = executor_named("docker", replace(ctx.node, executors=("docker",)))
    except RunyardError:
        return  # no Docker engine here: no containers either
    live = {w.id for w in live_workers(ctx.redis)} - {ctx.worker_id}
    for run_id in docker_executor.remove_orphans(live):  # type: ignore[attr-defined]
        log.info("removed an orphan container of %s", run_id)


# Why the worker stopped a run (``_supervise``); None: its process ended by itself.
CANCELED = "canceled"
TIMED_OUT = "timed out"
OVER_BUDGET = "over budget"


def channel_breach(channel: ChannelForwarder, reporter: RunReporter) -> str | None:
    """Which of the run's budgets it went over, if any (``scheduler.budgets``)."""
    return channel.over_budget or reporter.over_budget


def _supervise(
    execution: Execution,
    reporter: RunReporter,
    ctx: WorkerContext,
    assignment: RunAssignment,
    breach: Callable[[], str | None],
) -> tuple[int, str | None]:
    """Pump output while the process runs; stop it if a cancel arrives, it goes over a
    budget, or it runs past its ``max_run_duration_seconds``."""
    pump = threading.Thread(
        target=lambda: [reporter.write(text) for text in execution.output()],
        name=f"pump-{assignment.run_id}",
        daemon=True,
    )
    pump.start()
    reporter.start_flushing()
    limit = assignment.max_run_duration_seconds
    deadline = None if limit is None else time.monotonic() + limit
    stopped: str | None = None
    try:
        while True:
            left = CANCEL_POLL
            if deadline is not None:
                left = max(min(left, deadline - time.monotonic()), 0.0)
            exit_code = execution.wait(left)
            if exit_code is not None:
                execution.kill_remaining()
                break
            if _cancel_requested(ctx, assignment.run_id, assignment.attempt):
                stopped = CANCELED
            elif breach() is not None:
                stopped = OVER_BUDGET
            elif deadline is not None and time.monotonic() >= deadline:
                stopped = TIMED_OUT
            if stopped is not None:
                exit_code = execution.terminate(assignment.cancel_grace_seconds)
                break
    finally:
        pump.join(PUMP_JOIN)
        reporter.stop_flushing()
    return exit_code, stopped


def _cancel_requested(ctx: WorkerContext, run_id: str, attempt: int) -> bool:
    try:
        return control.is_cancel_requested(ctx.redis, run_id, attempt)
    except redis.RedisError:
        return False  # keep training through a Redis outage


def _upload_outputs(
    ctx: WorkerContext, folder: RunFolder, run_id: str, reporter: RunReporter
) -> str | None:
    """Outputs are the point of a run: an API restart during Finalizing is waited out.
    Past the run's file budget the rest is not stored: the reason is returned (and logged)."""
    for name, content in folder.outputs():
        try:
            delivery.upload(ctx.api, run_id, name, content)
        except RequestTooLarge as exc:
            reporter.write(f"runyard: {exc.message}; the other outputs are not stored\n")
            return exc.message
    return None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"script exited with code {code}"
