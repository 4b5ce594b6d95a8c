"""``runyard submit | runs | show | logs | cancel | workers``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from runyard.cli import output
from runyard.cli.context import client
from runyard.core import Environment, Experiment, ScriptRunConfig, Workspace
from runyard.errors import InvalidInput

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]

WORKER_COLUMNS = [
    ("id", "WORKER"),
    ("hostname", "HOST"),
    ("clusters", "CLUSTERS"),
    ("slots", "SLOTS"),
    ("busy", "BUSY"),
    ("draining", "DRAINING"),
    ("last_heartbeat", "LAST HEARTBEAT"),
    ("runs", "RUNS"),
]

RUN_COLUMNS = [
    ("position", "POS"),
    ("id", "RUN"),
    ("status", "STATUS"),
    ("priority", "PRIO"),
    ("worker_id", "WORKER"),
    ("created_at", "SUBMITTED"),
    ("pending_reason", "REASON"),
]


def submit(
    directory: Annotated[Path, typer.Argument(help="Folder to snapshot")],
    script: Annotated[str, typer.Option("--script", "-s", help="Entry script, inside DIR")],
    cluster: Annotated[
        Optional[str],
        typer.Option("--cluster", "-c", help="Cluster to run on (none: the default cluster)"),
    ] = None,
    arguments: Annotated[
        Optional[list[str]], typer.Argument(help="Script arguments, after --")
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", "-e")] = "default",
    priority: Annotated[int, typer.Option("--priority", "-p", help="Higher starts first")] = 0,
    interpreter: Annotated[
        Optional[str],
        typer.Option(help="Python to run with (user-managed environment)"),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the log until it ends")
    ] = False,
    tag: Annotated[
        Optional[list[str]], typer.Option("--tag", "-t", help="KEY=VALUE (or KEY), repeatable")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Snapshot DIR and queue SCRIPT on a cluster.

    Example: runyard submit ./src -s train.py -c gpu -- --lr 0.1
    """
    environment = Environment("cli")
    if interpreter:
        environment.python.user_managed_dependencies = True
        environment.python.interpreter_path = interpreter
    config = ScriptRunConfig(
        source_directory=directory,
        script=script,
        arguments=arguments or [],
        compute_target=cluster,
        environment=environment,
        priority=priority,
    )
    api = client()
    workspace = Workspace(url=api.base_url)
    workspace._client = api
    tags = dict(t.split("=", 1) if "=" in t else (t, None) for t in tag or [])
    run = Experiment(workspace, experiment).submit(config, tags=tags or None)
    data = run._details or {}
    if as_json:
        output.emit_json(data)
    else:
        reason = f" ({data['pending_reason']})" if data.get("pending_reason") else ""
        output.console.print(f"{run.id}  {data.get('status')}{reason}", highlight=False)
    if follow:
        _stream(run.id)


def runs(
    cluster: Annotated[Optional[str], typer.Option("--cluster", "-c")] = None,
    status: Annotated[str, typer.Option(help="queued, active or all")] = "all",
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a cluster's queued runs (with position and reason) and active runs."""
    if status not in ("queued", "active", "all"):
        raise InvalidInput("--status must be queued, active or all")
    api = client()
    if cluster:
        data = api.cluster_runs(cluster, status)
    else:
        if status != "all":
            raise InvalidInput("--status needs --cluster")
        data = api.list_runs(experiment=experiment)
    if as_json:
        output.emit_json(data)
    else:
        output.table(data, RUN_COLUMNS)


def show(run_id: str, as_json: JsonOpt = False) -> None:
    """Show one run."""
    data = client().get_run(run_id)
    if as_json:
        output.emit_json(data)
        return
    fields = [
        "id",
        "experiment",
        "cluster",
        "status",
        "position",
        "pending_reason",
        "priority",
        "script",
        "arguments",
        "worker_id",
        "exit_code",
        "failure_reason",
        "created_at",
        "running_at",
        "ended_at",
        "snapshot_digest",
    ]
    for key in fields:
        if data.get(key) not in (None, [], ""):
            output.console.print(f"[bold]{key:16}[/bold] {output.cell(data[key])}", highlight=False)


def logs(
    run_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the run ends")
    ] = False,
) -> None:
    """Print a run's log (stdout and stderr)."""
    if follow:
        _stream(run_id)
    else:
        sys.stdout.write(client().logs(run_id))


def _stream(run_id: str) -> None:
    for text in client().follow_logs(run_id):
        sys.stdout.write(text)
        sys.stdout.flush()


def cancel(
    run_ids: Annotated[Optional[list[str]], typer.Argument(help="Runs to cancel")] = None,
    all_queued: Annotated[
        Optional[str],
        typer.Option("--all-queued", metavar="CLUSTER", help="Cancel every queued run of CLUSTER"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel runs: queued ones never start; running ones are stopped."""
    api = client()
    if all_queued:
        results = api.cancel_queued(all_queued)
    elif run_ids and len(run_ids) == 1:
        run = api.cancel(run_ids[0])
        results = [{"id": run["id"], "status": run["status"], "error": None}]
    elif run_ids:
        results = api.cancel_many(run_ids)
    else:
        raise InvalidInput("name the runs to cancel, or --all-queued CLUSTER")
    if as_json:
        output.emit_json(results)
    else:
        for result in results:
            outcome = result.get("status") or f"not canceled: {result.get('error')}"
            output.console.print(f"{result['id']}  {outcome}", highlight=False)
    if any(r.get("error") for r in results):
        raise typer.Exit(4)


def workers(as_json: JsonOpt = False) -> None:
    """List live workers, what they serve and what they run."""
    data = client().list_workers()
    if as_json:
        output.emit_json(data)
    else:
        output.table(data, WORKER_COLUMNS)


def drain(worker_id: str, as_json: JsonOpt = False) -> None:
    """Let a worker finish its runs and take no new ones (it stays up)."""
    data = client().json("POST", f"/workers/{worker_id}/drain")
    if as_json:
        output.emit_json(data)
    else:
        output.console.print(
            f"draining {worker_id}: {data['busy']} run(s) to finish", highlight=False
        )


def status(as_json: JsonOpt = False) -> None:
    """Clusters with their queue depth and capacity, and the workers serving them."""
    api = client()
    clusters, workers_ = api.list_clusters(), api.list_workers()
    if as_json:
        output.emit_json({"clusters": clusters, "workers": workers_})
        return
    output.table(
        clusters,
        [
            ("name", "CLUSTER"),
            ("nodes", "NODES"),
            ("capacity", "CAPACITY"),
            ("active", "ACTIVE"),
            ("queued", "QUEUED"),
        ],
        title="clusters",
    )
    output.table(workers_, WORKER_COLUMNS, title="workers")
