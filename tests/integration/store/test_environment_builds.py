"""Environment builds in the store: a build is a queued run of its own, handed to a worker
as build-only; the latest completed run with an environment says what it was built as."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session

from protocol.environments import EnvironmentSpec
from protocol.workers import live_workers
from runyard.errors import NotFound
from runyard.status import RunStatus
from scheduler.admission import admit
from store import environment_builds as builds
from store import environments, run_listings
from store.models import EnvironmentBuildSpec, Experiment
from tests.support.database import CLUSTER, heartbeat, make_cluster, queue_run, set_columns, walk

SKLEARN = {
    "name": "sklearn",
    "version": "3",
    "python": {"conda_dependencies": {"pip_packages": ["scikit-learn>=1.4"]}},
}


def used(
    name: str, version: str | None, digit: str, spec_hash: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "hash": digit * 32,
        "spec_hash": spec_hash,
        "packages": [f"p=={digit}"],
    }


def test_a_build_is_a_queued_run_of_its_own_experiment_named_for_the_environment(
    session: Session,
) -> None:
    make_cluster(session)

    run = builds.submit_build(
        session, EnvironmentBuildSpec(environment=SKLEARN, cluster=CLUSTER), "ann"
    )
    session.commit()

    experiment = session.get(Experiment, run.experiment_id)
    assert experiment is not None and experiment.name == "environment-builds"
    assert (run.status, run.cluster, run.build_only) == (RunStatus.QUEUED, CLUSTER, True)
    assert (run.display_name, run.script, run.snapshot_digest) == ("build sklearn:3", "", None)
    assert run.environment == SKLEARN


def test_admission_hands_a_build_over_as_build_only_and_a_run_as_not(
    session: Session, client: redis.Redis
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    build = builds.submit_build(
        session, EnvironmentBuildSpec(environment=SKLEARN, cluster=CLUSTER), "ann"
    )
    session.commit()
    run_id = queue_run(session)

    assignments = admit(session, CLUSTER, live_workers(client))

    assert {(a.run_id, a.build_only) for a in assignments} == {(build.id, True), (run_id, False)}


def finish(session: Session, run_id: str, environment: dict[str, Any], status: RunStatus) -> None:
    set_columns(session, run_id, environment_used=environment)
    walk(session, run_id, RunStatus.PREPARING, status)


def test_the_latest_completed_run_with_a_name_and_version_is_found(session: Session) -> None:
    make_cluster(session)
    runs = {key: queue_run(session) for key in ("old", "new", "other", "failed", "unregistered")}
    finish(session, runs["old"], used("sklearn", "3", "a"), RunStatus.COMPLETED)
    finish(session, runs["new"], used("sklearn", "3", "b"), RunStatus.COMPLETED)
    finish(session, runs["other"], used("sklearn", "4", "c"), RunStatus.COMPLETED)
    finish(session, runs["failed"], used("sklearn", "3", "d"), RunStatus.FAILED)
    finish(session, runs["unregistered"], used("sklearn", None, "e"), RunStatus.COMPLETED)

    assert builds.latest_recorded(session, "sklearn", "3").id == runs["new"]
    assert builds.latest_recorded(session, "sklearn", "4").id == runs["other"]
    assert builds.latest_recorded(session, "sklearn", None).id == runs["unregistered"]


def test_an_environment_no_run_completed_with_is_not_found_in_plain_words(
    session: Session,
) -> None:
    make_cluster(session)
    finish(session, queue_run(session), used("sklearn", "3", "a"), RunStatus.FAILED)

    with pytest.raises(NotFound, match=r"environment sklearn:3 has not been built yet"):
        builds.latest_recorded(session, "sklearn", "3")
    with pytest.raises(NotFound, match=r"runyard env build torch"):
        builds.latest_recorded(session, "torch", None)


def test_one_run_shows_its_environment_and_a_listing_leaves_it_out(
    engine: Engine, session: Session, client: redis.Redis, queued_run: str
) -> None:
    finish(session, queued_run, used("sklearn", "3", "a"), RunStatus.COMPLETED)
    run = builds.latest_recorded(session, "sklearn", "3")

    shown = run_listings.describe(session, client, run).model_dump()
    [listed] = run_listings.list_runs(session).data

    assert shown["environment_used"]["packages"] == ["p==a"]
    assert "environment_used" not in listed.model_dump()


def test_a_registered_version_is_found_only_in_runs_built_from_its_content(
    session: Session,
) -> None:
    make_cluster(session)
    pip = {"python": {"conda_dependencies": {"pip_packages": ["scikit-learn>=1.4"]}}}
    registered, _ = environments.register(
        session, "sklearn", EnvironmentSpec.model_validate(pip), created_by="ann"
    )
    session.commit()
    assert registered.spec_hash is not None and registered.version == 1
    runs = {key: queue_run(session) for key in ("built", "impostor")}
    finish(
        session, runs["built"], used("sklearn", "1", "a", registered.spec_hash), RunStatus.COMPLETED
    )
    # Completed later, naming itself sklearn:1 but built from other packages.
    finish(session, runs["impostor"], used("sklearn", "1", "b", "f" * 32), RunStatus.COMPLETED)

    assert builds.latest_recorded(session, "sklearn", "1").id == runs["built"]


def test_a_registered_version_that_builds_nothing_matches_runs_that_built_nothing(
    session: Session,
) -> None:
    make_cluster(session)
    environments.register(session, "plain", EnvironmentSpec(), created_by="ann")
    session.commit()
    runs = {key: queue_run(session) for key in ("plain", "impostor")}
    finish(session, runs["plain"], used("plain", "1", "a"), RunStatus.COMPLETED)
    finish(session, runs["impostor"], used("plain", "1", "b", "f" * 32), RunStatus.COMPLETED)

    assert builds.latest_recorded(session, "plain", "1").id == runs["plain"]


def test_a_registered_version_no_run_was_built_from_is_not_found(session: Session) -> None:
    make_cluster(session)
    environments.register(session, "torch", EnvironmentSpec(), created_by="ann")
    session.commit()
    finish(session, queue_run(session), used("torch", "1", "b", "f" * 32), RunStatus.COMPLETED)

    with pytest.raises(NotFound, match=r"environment torch:1 has not been built yet"):
        builds.latest_recorded(session, "torch", "1")
