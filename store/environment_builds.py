"""Environment builds: ``env.build(ws)`` ahead of any run, and what the latest run that
used an environment recorded of it (``env.get_image_details(ws)``).

A build is an ordinary run marked ``build_only``, in the experiment ``environment-builds``:
it waits in its cluster's queue, its worker builds the environment as it would for any run
(the build log is the run's log), reports what it built, and ends Completed with no
script. Services take a session and never commit."""

from __future__ import annotations

import re
from typing import Any

from sqlmodel import Session, col, select

from protocol.limits import MAX_DISPLAY_NAME
from runyard.errors import NotFound
from runyard.status import RunStatus
from store.models import EnvironmentBuildSpec, RegisteredEnvironment, Run
from store.runs import check_placement, queue_run

ENVIRONMENT_BUILDS = "environment-builds"  # the experiment every build is a run of
REGISTERED_VERSION = re.compile(r"[1-9][0-9]{0,8}")  # as registering numbers them


def build_name(environment: dict[str, Any]) -> str:
    """``build <name>:<version>`` (no version: ``build <name>``), the build's display name."""
    name = environment.get("name") or "environment"
    version = environment.get("version")
    shown = f"build {name}:{version}" if version else f"build {name}"
    return shown[:MAX_DISPLAY_NAME]


def submit_build(
    session: Session,
    spec: EnvironmentBuildSpec,
    submitted_by: str | None,
    team: str | None = None,
) -> Run:
    """Queue a build of ``spec.environment`` on its cluster (raises before any write when
    the cluster cannot run it), charged to ``team`` (the token's default team)."""
    cluster = check_placement(session, spec.cluster, spec.environment)
    return queue_run(
        session,
        ENVIRONMENT_BUILDS,
        submitted_by,
        cluster=cluster.name,
        environment=spec.environment,
        display_name=build_name(spec.environment),
        build_only=True,
        team=team,
    )


def latest_recorded(session: Session, name: str, version: str | None) -> Run:
    """The run, build or not, that last completed with environment ``name`` (at
    ``version``; None: an environment never registered) and recorded what it used. For a
    registered version, only a run whose build was made of that version's content counts:
    any run may name itself ``sklearn:3``, only the registered spec's hash says it is."""
    used = col(Run.environment_used)
    recorded_version = used["version"].as_string()
    conditions = [
        Run.status == RunStatus.COMPLETED,
        used["name"].as_string() == name,
        recorded_version.is_(None) if version is None else recorded_version == version,
    ]
    registered = _registered(session, name, version)
    if registered is not None:
        recorded_hash = used["spec_hash"].as_string()
        wanted = registered.spec_hash
        conditions.append(recorded_hash.is_(None) if wanted is None else recorded_hash == wanted)
    query = select(Run).where(*conditions)
    run = session.exec(query.order_by(col(Run.completed_at).desc()).limit(1)).first()
    if run is None:
        shown = f"{name}:{version}" if version else name
        raise NotFound(
            f"environment {shown} has not been built yet: no completed run recorded it "
            f"(build it with env.build(ws), or runyard env build {name})"
        )
    return run


def _registered(session: Session, name: str, version: str | None) -> RegisteredEnvironment | None:
    """The registered version ``version`` of ``name``, if that is one."""
    if version is None or not REGISTERED_VERSION.fullmatch(version):
        return None
    return session.exec(
        select(RegisteredEnvironment).where(
            RegisteredEnvironment.name == name, RegisteredEnvironment.version == int(version)
        )
    ).first()
