"""``runyard clusters`` and ``runyard cluster create|show|update|delete``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Optional

import typer

from runyard.cli import output
from runyard.cli.context import client
from runyard.cli.help import Command, Group
from runyard.errors import InvalidInput

app = typer.Typer(
    cls=Group, help="Create, show, update and delete named clusters.", no_args_is_help=True
)

CLUSTER_COLUMNS = [
    ("name", "CLUSTER"),
    ("default_mark", "DEFAULT"),
    ("nodes", "NODES"),
    ("executor", "EXECUTOR"),
    ("image", "IMAGE"),
    ("worker_count", "WORKERS"),
    ("slots", "SLOTS"),
    ("active", "ACTIVE"),
    ("queued", "QUEUED"),
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]


def _row(cluster: dict[str, Any]) -> dict[str, Any]:
    return {
        **cluster,
        "worker_count": len(cluster.get("workers", [])),
        "image": (cluster.get("container") or {}).get("image"),
        "default_mark": "*" if cluster.get("is_default") else "",
    }


def list_clusters(as_json: JsonOpt = False) -> None:
    """List clusters with their workers, slots and queue depth."""
    clusters = client().list_clusters()
    if as_json:
        output.emit_json(clusters)
    else:
        output.table([_row(c) for c in clusters], CLUSTER_COLUMNS, empty="no clusters")


def _settings(
    nodes: int | None,
    executor: str | None,
    grace: float | None,
    description: str | None,
    environment: str | None,
    default: bool | None = None,
    container_runs: bool | None = None,
    budgets: str | None = None,
    teams: TeamSettings | None = None,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "nodes": nodes,
        "executor": executor,
        "cancel_grace_seconds": grace,
        "description": description,
        "is_default": default,
        "container_runs": container_runs,
        **(teams.as_settings() if teams is not None else {}),
    }
    for option, text in (("environment", environment), ("budgets", budgets)):
        if text is not None:
            try:
                values[option] = json.loads(text)
            except ValueError as exc:
                raise InvalidInput(f"--{option} is not valid JSON: {exc}") from exc
    return {k: v for k, v in values.items() if v is not None}


NodesOpt = Annotated[Optional[int], typer.Option("--nodes", "-n", help="Max concurrent runs")]
ExecutorOpt = Annotated[
    Optional[str],
    typer.Option(
        help="How runs execute: local (host processes) or docker (containers)", metavar="KIND"
    ),
]
ImageOpt = Annotated[
    Optional[str],
    typer.Option(help="Docker image for runs that name none (the cluster's container.image)"),
]
GraceOpt = Annotated[Optional[float], typer.Option("--grace", help="Cancel grace period, seconds")]
DescriptionOpt = Annotated[Optional[str], typer.Option(help="Free text")]
EnvironmentOpt = Annotated[Optional[str], typer.Option(help="Default environment as JSON")]
DefaultOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--default/--no-default",
        help="Where runs naming no cluster go (Azure's compute target 'local'); one at most",
    ),
]
BudgetsOpt = Annotated[
    Optional[str],
    typer.Option(help="What each run may put in, as JSON, e.g. '{\"log_bytes\": 100000000}'"),
]
ContainerRunsOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--container-runs/--no-container-runs",
        help="A local cluster also takes runs that ask for Docker, in containers "
        "(otherwise they are refused)",
    ),
]


PriorityPreemptionOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--priority-preemption/--no-priority-preemption",
        help="Teams: a waiting run may preempt a lower-priority run of its own team, or of a "
        "team over its quota",
    ),
]
MinRuntimeOpt = Annotated[
    Optional[float],
    typer.Option(
        "--preemption-min-runtime",
        min=0,
        metavar="SECONDS",
        help="Teams: a run is never preempted before it ran this long (default 60)",
    ),
]
HalfLifeOpt = Annotated[
    Optional[float],
    typer.Option(
        "--fair-share-half-life",
        metavar="HOURS",
        help="Teams: past usage counts half after this long (default 168, a week)",
    ),
]
AgingOpt = Annotated[
    Optional[float],
    typer.Option(
        "--priority-aging",
        metavar="SECONDS",
        help="A waiting run gains one priority step per this long waited (default 3600)",
    ),
]


@dataclass(frozen=True)
class TeamSettings:
    """The cluster settings of the team scheduler (used once it has team quotas)."""

    priority_preemption: bool | None = None
    preemption_min_runtime_seconds: float | None = None
    fair_share_half_life_hours: float | None = None
    priority_aging_seconds: float | None = None

    def as_settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@app.command("create", cls=Command)
def create(
    name: str,
    nodes: NodesOpt = 1,
    executor: ExecutorOpt = None,
    image: ImageOpt = None,
    grace: GraceOpt = None,
    description: DescriptionOpt = None,
    environment: EnvironmentOpt = None,
    default: DefaultOpt = None,
    container_runs: ContainerRunsOpt = None,
    budgets: BudgetsOpt = None,
    priority_preemption: PriorityPreemptionOpt = None,
    preemption_min_runtime: MinRuntimeOpt = None,
    fair_share_half_life: HalfLifeOpt = None,
    priority_aging: AgingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a cluster.

    Example: runyard cluster create gpu --nodes 4 --executor docker --image my/train:1
    """
    teams = TeamSettings(
        priority_preemption, preemption_min_runtime, fair_share_half_life, priority_aging
    )
    settings = _settings(
        nodes, executor, grace, description, environment, default, container_runs, budgets, teams
    )
    if image is not None:
        settings["container"] = {"image": image}
    cluster = client().create_cluster(name, **settings)
    _print(cluster, as_json)


@app.command("show", cls=Command)
def show(name: str, as_json: JsonOpt = False) -> None:
    """Show a cluster, its workers and its queue depth."""
    _print(client().get_cluster(name), as_json)


@app.command("update", cls=Command)
def update(
    name: str,
    nodes: NodesOpt = None,
    executor: ExecutorOpt = None,
    image: ImageOpt = None,
    grace: GraceOpt = None,
    description: DescriptionOpt = None,
    environment: EnvironmentOpt = None,
    default: DefaultOpt = None,
    container_runs: ContainerRunsOpt = None,
    budgets: BudgetsOpt = None,
    priority_preemption: PriorityPreemptionOpt = None,
    preemption_min_runtime: MinRuntimeOpt = None,
    fair_share_half_life: HalfLifeOpt = None,
    priority_aging: AgingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a cluster's node limit, executor, image, defaults or team scheduling."""
    teams = TeamSettings(
        priority_preemption, preemption_min_runtime, fair_share_half_life, priority_aging
    )
    changes = _settings(
        nodes, executor, grace, description, environment, default, container_runs, budgets, teams
    )
    api = client()
    if image is not None:
        # The API replaces the whole container policy: keep what else it sets.
        container = api.get_cluster(name).get("container") or {}
        changes["container"] = {**container, "image": image}
    if not changes:
        raise InvalidInput("nothing to update: give --nodes, --executor, --image, --default, ...")
    _print(api.update_cluster(name, **changes), as_json)


@app.command("delete", cls=Command)
def delete(
    name: str,
    force: Annotated[
        bool, typer.Option("--force", help="Cancel its queued and active runs")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a cluster (refused while it has queued or active runs, unless --force)."""
    canceled = client().delete_cluster(name, force=force)["data"]
    if as_json:
        output.emit_json({"deleted": name, "canceled": canceled})
    else:
        suffix = f"; canceled {len(canceled)} run(s)" if canceled else ""
        output.console.print(f"deleted cluster {name}{suffix}")


def _print(cluster: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.emit_json(cluster)
        return
    output.table([_row(cluster)], CLUSTER_COLUMNS)
    output.table(
        cluster.get("workers") or [],
        [
            ("id", "WORKER"),
            ("hostname", "HOST"),
            ("slots", "SLOTS"),
            ("busy", "BUSY"),
            ("last_heartbeat", "LAST HEARTBEAT"),
            ("runs", "RUNS"),
        ],
        empty=f"no workers serve {cluster['name']}",
    )
    teams = cluster.get("teams") or []
    if teams:  # a cluster shared by teams (one with quotas)
        rows = [{**t, "team": t["team"] or "(no team)"} for t in teams]
        output.table(rows, TEAM_COLUMNS)


# A cluster's teams (``GET /clusters/{name}``: its quota, use, borrowing and lending).
TEAM_COLUMNS = [
    ("team", "TEAM"),
    ("quota_slots", "QUOTA"),
    ("used_slots", "USED"),
    ("borrowed_slots", "BORROWED"),
    ("lent_slots", "LENT"),
    ("waiting", "WAITING"),
    ("fair_share_ratio", "FAIR SHARE"),
    ("preemptions", "PREEMPTIONS"),
]
