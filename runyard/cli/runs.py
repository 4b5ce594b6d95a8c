"""``runyard submit | runs | show | logs | wait | cancel | workers``."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from runyard import api_paths
from runyard.cli import environment_used, outcome, output
from runyard.cli import submit_options as opts
from runyard.cli.context import client
from runyard.client import Client
from runyard.core import Experiment, ScriptRunConfig
from runyard.errors import InvalidInput
from runyard.status import UNSUCCESSFUL, WAITING

JsonOpt = opts.JsonOpt

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

# Runs of every cluster: which cluster and experiment each is in, and its name.
ALL_RUN_COLUMNS = [
    ("id", "RUN"),
    ("display_name", "NAME"),
    ("experiment", "EXPERIMENT"),
    ("cluster", "CLUSTER"),
    ("status", "STATUS"),
    ("position", "POS"),
    ("priority", "PRIO"),
    ("created_at", "SUBMITTED"),
    ("pending_reason", "REASON"),
]


def submit(
    directory: opts.Directory,
    script: opts.Script,
    cluster: opts.Cluster = None,
    arguments: Annotated[
        Optional[list[str]], typer.Argument(help="Script arguments, after --")
    ] = None,
    experiment: opts.ExperimentName = "default",
    priority: opts.Priority = 0,
    team: opts.Team = None,
    non_preemptible: opts.NonPreemptible = False,
    image: opts.Image = None,
    env_file: opts.EnvFile = None,
    interpreter: opts.Interpreter = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Stream the log until the run ends; exit 0 only if Completed"
        ),
    ] = False,
    tag: Annotated[
        Optional[list[str]], typer.Option("--tag", "-t", help="KEY=VALUE (or KEY), repeatable")
    ] = None,
    display_name: Annotated[
        Optional[str],
        typer.Option("--display-name", "-n", help="A name for people (run.display_name)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Snapshot DIR and queue SCRIPT on a cluster.

    Example: runyard submit ./src -s train.py -c gpu -- --lr 0.1
    """
    config = ScriptRunConfig(
        source_directory=directory,
        script=script,
        arguments=arguments or [],
        compute_target=cluster,
        environment=opts.environment(env_file, interpreter, image),
        priority=priority,
        team=team,
        preemptible=not non_preemptible,
    )
    api = client()
    run = Experiment(opts.workspace(api), experiment).submit(
        config, tags=opts.tags(tag), display_name=display_name
    )
    data = run._details or {}
    if as_json:
        output.emit_json(data)
    else:
        reason = f" ({data['pending_reason']})" if data.get("pending_reason") else ""
        output.console.print(f"{run.id}  {data.get('status')}{reason}", highlight=False)
    if follow:
        raise typer.Exit(_stream(api, run.id))


def runs(
    cluster: Annotated[Optional[str], typer.Option("--cluster", "-c")] = None,
    status: Annotated[str, typer.Option(help="queued, active or all")] = "all",
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500, help="Page size")] = 100,
    cursor: Annotated[
        Optional[str], typer.Option(help="Show the page after this one (the cursor printed)")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every page, one after another")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List runs a page at a time: a cluster's queued runs (with position and reason) and
    active runs, or (without --cluster) the latest runs of every cluster. Prints how to
    see the next page; --all reads every page."""
    if status not in ("queued", "active", "all"):
        raise InvalidInput("--status must be queued, active or all")
    api = client()
    if cluster:
        path, params = api_paths.cluster_runs(cluster), {"status": status}
    else:
        if status != "all":
            raise InvalidInput("--status needs --cluster")
        path, params = api_paths.RUNS, {"experiment": experiment}
    if every:
        data = list(api.pages(path, page=limit, cursor=cursor, **params))
        page: dict = {"data": data, "count": len(data), "next_cursor": None}
    else:
        page = api.page(path, limit=limit, cursor=cursor, **params)
        data = page["data"]
    if cluster and experiment:
        data = [r for r in data if r.get("experiment") == experiment]
    if as_json:
        output.emit_json(data)
        return
    columns = RUN_COLUMNS if cluster else ALL_RUN_COLUMNS
    output.table(data, columns, empty=_no_runs(cluster, status, experiment))
    if page.get("next_cursor"):
        total = f" of {page['count']}" if page.get("count") is not None else ""
        output.console.print(
            f"showing {len(page['data'])}{total}; next page: --cursor {page['next_cursor']} "
            "(or --all)",
            highlight=False,
            soft_wrap=True,
        )


def _no_runs(cluster: str | None, status: str, experiment: str | None) -> str:
    kind = {"queued": "queued runs", "active": "active runs"}.get(status, "runs")
    where = f" on {cluster}" if cluster else ""
    return f"no {kind}{where}" + (f" in experiment {experiment}" if experiment else "")


def show(run_id: str, as_json: JsonOpt = False) -> None:
    """Show one run."""
    data = client().get_run(run_id)
    if as_json:
        output.emit_json(data)
        return
    fields = [
        "id",
        "display_name",
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
        "team",
        "preemptions",
        "preempted_by",
        "preemption_reason",
        "created_at",
        "running_at",
        "ended_at",
        "snapshot_digest",
    ]
    for key in fields:
        if key == "preemptions" and not data.get(key):
            continue  # never preempted: nothing to say
        if data.get(key) not in (None, [], ""):
            line = Text(f"{key:16}", style="bold").append(f" {output.cell(data[key])}")
            output.console.print(line, highlight=False)
    if data.get("environment_used"):
        environment_used.print_rows(data["environment_used"])


def logs(
    run_id: str,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep streaming until the run ends; exit 0 only if Completed"
        ),
    ] = False,
) -> None:
    """Print a run's log (stdout and stderr)."""
    api = client()
    if follow:
        run = api.get_run(run_id)
        if run.get("status") in WAITING:  # else the wait for its first line looks like a hang
            note = _queued_note(run, "following it once it starts")
            output.errors.print(Text(note), highlight=False, soft_wrap=True)
        raise typer.Exit(_stream(api, run_id))
    text = api.logs(run_id)
    sys.stdout.write(text)
    sys.stdout.flush()
    if not text:  # say why there is nothing, on stderr: stdout stays the log
        run = api.get_run(run_id)
        if run.get("status") in WAITING:
            note = _queued_note(run, "no log yet")
            output.errors.print(Text(note), highlight=False, soft_wrap=True)
        elif run.get("status") in UNSUCCESSFUL:
            note = f"{outcome.final_line(run)} (it wrote no log)"
            output.errors.print(Text(note), highlight=False, soft_wrap=True)


def _queued_note(run: dict[str, Any], then: str) -> str:
    """``run X is queued on cpu (position 2): waiting behind 1 run(s); all 1 node(s) busy``."""
    place = f" (position {run['position']})" if run.get("position") else ""
    where = f" on {run['cluster']}" if run.get("cluster") else ""
    reason = f": {run['pending_reason']}" if run.get("pending_reason") else ""
    return output.printable(f"run {run['id']} is queued{where}{place}{reason}; {then}")


def wait(
    run_id: str,
    as_json: JsonOpt = False,
) -> None:
    """Wait until a run ends; print how it ended. Exit 0 only if it Completed."""
    api = client()
    run = outcome.wait_for_end(api, run_id)
    if as_json:
        output.emit_json(run)
    raise typer.Exit(outcome.report(run))


def _stream(api: Client, run_id: str) -> int:
    """Print the log as it is written, then one line of how the run ended; its exit code."""
    return outcome.report(outcome.wait_for_end(api, run_id, sys.stdout.write))


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
    elif not results:
        output.console.print(f"no queued runs on {all_queued}", highlight=False)
    else:
        for result in results:
            said = result.get("status") or f"not canceled: {result.get('error')}"
            output.console.print(f"{result['id']}  {said}", highlight=False)
    if any(r.get("error") for r in results):
        raise typer.Exit(4)


def workers(as_json: JsonOpt = False) -> None:
    """List live workers, what they serve and what they run."""
    data = client().list_workers()
    if as_json:
        output.emit_json(data)
    else:
        output.table(data, WORKER_COLUMNS, empty="no workers")


def drain(worker_id: str, as_json: JsonOpt = False) -> None:
    """Let a worker finish its runs and take no new ones (it stays up)."""
    data = client().drain_worker(worker_id)
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
        empty="no clusters",
    )
    output.table(workers_, WORKER_COLUMNS, title="workers", empty="no workers")
