"""Executing one run on this worker: claim, prepare, start, pump output, stop, finalize.

One run's life from claim to final state reads top to bottom here, a little over 400 lines;
its parts that stand alone already live beside it (reporter, channel, run_folder, stopping,
executors)."""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import redis

from protocol import control, keys
from protocol.budgets import RunBudgets, over
from protocol.environment_used import nothing_built
from protocol.environments import Executor
from protocol.messages import RunAssignment, StateChanged
from protocol.streams import send_to_ingest
from protocol.workers import live_workers
from runyard.client import Client
from runyard.errors import RequestTooLarge, RunyardError
from runyard.status import RunStatus
from runyard.tracking import contract
from worker import delivery, preemption
from worker.channel import ChannelForwarder
from worker.environments.build_log import RUN_FILE as BUILD_LOG
from worker.environments.config import config_of
from worker.executors import Execution, ExecutionRequest, Node, executor_named
from worker.executors import Executor as ExecutorBase
from worker.heartbeat import Heartbeat
from worker.reporter import RunReporter
from worker.run_folder import RunFolder
from worker.slots import SlotPool
from worker.stopping import WorkerStop
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
    # Set when the worker stops (SIGTERM): its runs are stopped and recorded, none starts.
    stopping: WorkerStop = field(default_factory=WorkerStop)


@dataclass
class ActiveRun:
    """A run this worker holds, as a stop at once needs it (``stop_at_once``)."""

    assignment: RunAssignment
    reporter: RunReporter
    execution: Execution | None = None
    ended: bool = False  # its final state is reported


def execute(assignment: RunAssignment, ctx: WorkerContext) -> None:
    run_id = assignment.run_id
    if ctx.stopping.is_set():
        # Not claimed: the watchdog hands it to the broker again (dispatch_timeout).
        log.info("not starting %s: this worker is stopping", run_id)
        return
    claim = control.claim_run(ctx.redis, run_id, ctx.worker_id, assignment.attempt)
    if claim != control.ClaimResult.CLAIMED:
        why = "cancelled before it started" if claim == control.ClaimResult.CANCELED else "taken"
        log.info("not starting %s: %s", run_id, why)
        return
    ctx.heartbeat.add_run(run_id)
    budgets = RunBudgets.of(assignment.budgets)
    reporter = RunReporter(ctx.redis, run_id, ctx.worker_id, assignment.attempt, budgets)
    active = ActiveRun(assignment, reporter)
    ctx.stopping.hold(run_id, assignment.cancel_grace_seconds, active)
    execution: Execution | None = None
    channel: ChannelForwarder | None = None
    folder: RunFolder | None = None
    executor: ExecutorBase | None = None
    slot = ctx.slots.acquire()
    reporter.gpus = len(ctx.slots.gpus(slot))
    try:
        reporter.state(RunStatus.PREPARING)
        reporter.note(
            f"Preparing run {run_id} (attempt {assignment.attempt}) on worker "
            f"{ctx.worker_id}, cluster {assignment.cluster}, executor {assignment.executor}"
        )
        executor = executor_named(assignment.executor, ctx.node)
        workdir = ctx.workspace.prepare(run_id, assignment.snapshot_digest)
        # Opened while the folders are still the worker's own: every later read goes
        # through these descriptors, never by a path the run could have swapped.
        folder = RunFolder.create(workdir, ctx.workspace.tracking_dir(run_id))
        channel = ChannelForwarder(
            ctx.redis, ctx.api, run_id, folder, assignment.attempt, budgets, note=reporter.note
        )
        channel.listen()
        run_token = ctx.api.run_token(run_id, assignment.attempt)
        if assignment.attempt > 1:
            preemption.put_back(ctx.api.base_url, run_token, folder, reporter, budgets)
        request = ExecutionRequest(
            run_id=run_id,
            script=assignment.script,
            arguments=assignment.arguments,
            environment=assignment.environment,
            working_dir=workdir,
            tracking_dir=ctx.workspace.tracking_dir(run_id),
            context_env={
                contract.RUN_ID: run_id,
                contract.CLUSTER: assignment.cluster,
                contract.EXPERIMENT: assignment.experiment,
                contract.URL: ctx.api.base_url,
                contract.TOKEN: run_token,
                contract.ATTEMPT: str(assignment.attempt),
                contract.PREVIOUS_ATTEMPT_PREEMPTED: (
                    "1" if assignment.previous_attempt_preempted else "0"
                ),
            },
            container=assignment.container,
            gpu_ids=ctx.slots.gpus(slot),
            note=reporter.note,
            canceled=lambda: _stop_asked(ctx, run_id, assignment.attempt),
        )
        try:
            executor.prepare(request)
        except RunyardError:
            if not _stop_asked(ctx, run_id, assignment.attempt):
                raise
            # else: stopped by the cancel or the preemption (a build, say): it ends below
        finally:
            _keep_build_log(ctx, executor, run_id)
        if control.is_cancel_requested(ctx.redis, run_id, assignment.attempt):
            reporter.note("Canceled before the script started")
            reporter.state(RunStatus.CANCELED, reason="canceled before it started")
            return
        if _preemption(ctx, run_id, assignment.attempt) is not None:
            preemption.report_requeue(ctx.redis, reporter, assignment, "before the script started")
            return
        if ctx.stopping.is_set():
            _end_stopped(ctx, active, None)
            return
        reporter.state(
            RunStatus.STARTING,
            environment=executor.environment_used or nothing_built(assignment.environment),
        )
        if assignment.build_only:
            reporter.note("Environment ready; an environment build runs no script")
            reporter.state(RunStatus.COMPLETED)
            return
        execution = executor.start(request)
        active.execution = execution
        ctx.workspace.remember(run_id, assignment.executor, execution.handle, assignment)
        reporter.note(f"Running {assignment.script}; its output follows")
        reporter.state(RunStatus.RUNNING)
        channel.start()
        watch = BudgetWatch(channel, reporter, folder, budgets)
        try:
            with watch:
                exit_code, stopped = _supervise(execution, reporter, ctx, assignment, watch.breach)
        finally:
            channel.stop()  # every event the run wrote is on its way before it ends
        if stopped == SERVICE_STOPPED and assignment.requeue_on_node_loss:
            _end_stopped(ctx, active, exit_code)  # requeued: this attempt's outputs are moot
            return
        if stopped == PREEMPTED:
            # Its next attempt resumes from what this one stored: outputs and checkpoints.
            _upload_outputs(ctx, folder, run_id, reporter)
            execution.cleanup()
            preemption.report_requeue(ctx.redis, reporter, assignment)
            return
        over_budget = watch.breach()  # also what its last output took it over
        if stopped is None and over_budget is not None:
            stopped = OVER_BUDGET
        reporter.state(RunStatus.FINALIZING)
        refused = _upload_outputs(ctx, folder, run_id, reporter)
        failure = None
        if stopped is None and exit_code != 0:
            failure = execution.failure_reason(exit_code) or describe_exit(exit_code)
        # Its container is gone before the run is reported ended: whoever waits on the run
        # finds nothing of it left (the finally below then has nothing to remove).
        execution.cleanup()
        if stopped is not None:
            status, reason = stop_outcome(stopped, assignment, over_budget)
            reporter.state(status, exit_code=exit_code, reason=reason)
        elif failure is not None:
            reporter.state(RunStatus.FAILED, exit_code=exit_code, reason=failure)
        elif channel.failure is not None:
            reporter.state(RunStatus.FAILED, exit_code=0, reason=channel.failure)
        elif refused is not None:
            reporter.state(RunStatus.FAILED, exit_code=0, reason=refused)
        else:
            reporter.state(RunStatus.COMPLETED, exit_code=0)
    except (RunyardError, OSError, ValueError) as exc:
        log.warning("run %s failed on this worker: %s", run_id, exc)
        _fail(reporter, str(exc), started=active.execution is not None)
    except Exception as exc:
        log.exception("run %s: unexpected worker error", run_id)
        _fail(reporter, f"worker error: {exc!r}", started=active.execution is not None)
    finally:
        active.ended = True
        ctx.stopping.release(run_id)
        if channel is not None:
            channel.close()
        if folder is not None:
            folder.close()
        if execution is not None:
            execution.cleanup()
        if executor is not None:
            executor.release()
        ctx.slots.release(slot)
        ctx.heartbeat.remove_run(run_id)
        ctx.workspace.discard(run_id)


def _fail(reporter: RunReporter, reason: str, *, started: bool) -> None:
    """End the run Failed, its reason also the last line of its log (``runyard logs`` then
    says what happened, even when the script never ran)."""
    when = "" if started else " before the script started"
    reporter.note(f"Failed{when}: {reason}")
    reporter.state(RunStatus.FAILED, reason=reason)


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
    for name in config_of(ctx.node.builds).cache.sweep_staging():
        log.info("removed the staging folder of a build that died with its worker: %s", name)
    _remove_orphan_containers(ctx)


def _remove_orphan_containers(ctx: WorkerContext) -> None:
    """Containers this worker id started whose run folder is gone (a crash in between)."""
    try:
        docker = replace(ctx.node, executors=(Executor.DOCKER,))
        docker_executor = executor_named(Executor.DOCKER, docker)
    except RunyardError:
        return  # no Docker engine here: no containers either
    live = {w.id for w in live_workers(ctx.redis)} - {ctx.worker_id}
    for run_id in docker_executor.remove_orphans(live):  # type: ignore[attr-defined]
        log.info("removed an orphan container of %s", run_id)
    if docker_executor.remove_dead_builds(live):  # type: ignore[attr-defined]
        log.info("removed what environment builds of dead workers left on this engine")


# Why the worker stopped a run (``_supervise``); None: its process ended by itself.
CANCELED = "canceled"
TIMED_OUT = "timed out"
SERVICE_STOPPED = "service stopped"  # the worker itself is stopping (SIGTERM)
PREEMPTED = "preempted"  # the scheduler preempted the attempt: the run is requeued
OVER_BUDGET = "over budget"  # it went over one of its budgets (protocol.budgets)


WORKSPACE_LOOK = 2.0  # seconds between looks at the size of a run's working folder


class BudgetWatch:
    """Which of the run's budgets it went over, if any: tracking events and output as they
    come in; the working folder looked at every ``WORKSPACE_LOOK`` seconds by a thread of
    its own (a folder of a million files takes a while to walk; the supervisor never
    waits on it)."""

    def __init__(
        self,
        channel: ChannelForwarder,
        reporter: RunReporter,
        folder: RunFolder,
        budgets: RunBudgets,
    ) -> None:
        self.channel, self.reporter, self.folder, self.budgets = channel, reporter, folder, budgets
        self.workspace: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._look, name="workspace-watch", daemon=True)

    def __enter__(self) -> BudgetWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def breach(self) -> str | None:
        return self.channel.over_budget or self.reporter.over_budget or self.workspace

    def _look(self) -> None:
        limit = self.budgets.workspace_bytes
        while not self._done.wait(WORKSPACE_LOOK):
            try:
                used = self.folder.usage(stop_past=limit)
            except OSError:
                continue
            if used > limit:
                self.workspace = over(self.budgets, "workspace_bytes")
                self.reporter.note(f"stopping the run: it is {self.workspace}")
                return


def stop_outcome(
    stopped: str, assignment: RunAssignment, over_budget: str | None = None
) -> tuple[RunStatus, str]:
    """The final state and reason of a run the worker stopped, by why it stopped it."""
    if stopped == CANCELED:
        return RunStatus.CANCELED, "canceled by request"
    if stopped == OVER_BUDGET:
        return RunStatus.FAILED, f"stopped: {over_budget}"
    if stopped == TIMED_OUT:
        limit = assignment.max_run_duration_seconds
        return RunStatus.FAILED, f"ran longer than max_run_duration_seconds ({limit:g} s); stopped"
    if stopped == SERVICE_STOPPED:
        return RunStatus.FAILED, "service stopped"
    raise ValueError(f"unknown stop reason {stopped!r}")


def _end_stopped(ctx: WorkerContext, active: ActiveRun, exit_code: int | None) -> None:
    """Record a run the worker's stop ended: Failed "service stopped", or, on a cluster that
    requeues runs whose node was lost, nothing: its alive key goes at once, so the watchdog
    sees the node lost and requeues it (as after a crash, only sooner)."""
    run_id = active.assignment.run_id
    if active.assignment.requeue_on_node_loss:
        ctx.heartbeat.remove_run(run_id)
        ctx.redis.delete(keys.run_alive(run_id))
        log.info("run %s stopped with this worker; it will be requeued", run_id)
        return
    status, reason = stop_outcome(SERVICE_STOPPED, active.assignment)
    active.reporter.state(status, exit_code=exit_code, reason=reason)


def stop_at_once(ctx: WorkerContext, runs: list[ActiveRun]) -> None:
    """The worker exits now (a second signal, or its stop ran past its deadline): kill each
    run in hand without grace and record it, without waiting on anything that may hang (the
    run's own reporter may be stuck retrying)."""
    for active in runs:
        if active.execution is not None:
            with contextlib.suppress(Exception):
                active.execution.kill()
    for active in runs:
        if active.ended:
            continue
        run_id, assignment = active.assignment.run_id, active.assignment
        try:
            if assignment.requeue_on_node_loss:
                ctx.heartbeat.remove_run(run_id)
                ctx.redis.delete(keys.run_alive(run_id))
                continue
            status, reason = stop_outcome(SERVICE_STOPPED, assignment)
            report = StateChanged(
                run_id=run_id,
                status=status,
                worker_id=ctx.worker_id,
                reason=reason,
                attempt=assignment.attempt,
            )
            send_to_ingest(ctx.redis, [report])
        except redis.RedisError as exc:
            log.warning("could not record %s as stopped: %s", run_id, exc)


def _supervise(
    execution: Execution,
    reporter: RunReporter,
    ctx: WorkerContext,
    assignment: RunAssignment,
    over_budget: Callable[[], str | None],
) -> tuple[int, str | None]:
    """Pump output while the process runs; stop it if a cancel arrives, the scheduler
    preempts it, the worker stops, it goes over a budget, or it runs past its
    ``max_run_duration_seconds``. Each stop is the same: SIGTERM, the cluster's grace
    period, SIGKILL."""
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
            elif _preemption(ctx, assignment.run_id, assignment.attempt) is not None:
                stopped = PREEMPTED
            elif ctx.stopping.is_set():
                stopped = SERVICE_STOPPED
            elif over_budget() is not None:
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


def _preemption(ctx: WorkerContext, run_id: str, attempt: int) -> str | None:
    return preemption.reason(ctx.redis, run_id, attempt)


def _stop_asked(ctx: WorkerContext, run_id: str, attempt: int) -> bool:
    """A cancel or a preemption: what stops an environment's build before the script."""
    return _cancel_requested(ctx, run_id, attempt) or _preemption(ctx, run_id, attempt) is not None


def _upload_outputs(
    ctx: WorkerContext, folder: RunFolder, run_id: str, reporter: RunReporter
) -> str | None:
    """Outputs are the point of a run: an API restart during Finalizing is waited out.
    Past the run's file budget the rest is not stored: the reason is returned (and logged)."""
    for name, content in folder.outputs():
        try:
            delivery.upload(ctx.api, run_id, name, content)
        except RequestTooLarge as exc:
            reporter.note(f"{exc.message}; the other outputs are not stored")
            return exc.message
    return None


def _keep_build_log(ctx: WorkerContext, executor: ExecutorBase, run_id: str) -> None:
    """The environment's build log becomes a run file, when a build ran (or failed): a
    cache hit keeps nothing and waits on no upload."""
    log = executor.build_log
    if log is None or (executor.environment_used or {}).get("cached"):
        return
    with tempfile.TemporaryFile() as content:  # uploads read from a file (their size)
        content.write(log.content())
        try:
            delivery.upload(ctx.api, run_id, BUILD_LOG, content)
        except RunyardError as exc:
            log.line(f"the build log could not be kept as {BUILD_LOG}: {exc}")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"script exited with code {code}"
