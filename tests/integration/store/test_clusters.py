"""Clusters in the store (``store/clusters.py``): create, read, update, list, delete, name
rules and the clusters file."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from runyard.errors import AlreadyExists, ClusterBusy, ClusterNotFound, InvalidInput
from runyard.status import RunStatus
from store import clusters, teams
from store.db import as_utc
from store.models import Cluster, ClusterCreate, ClusterUpdate
from tests.support.database import CLUSTER, heartbeat, make_cluster, queue_run, reload, walk


def test_a_created_cluster_can_be_read_back(engine: Engine, session: Session) -> None:
    make_cluster(
        session,
        nodes=3,
        executor="docker",
        environment={"environment_variables": {"A": "1"}},
        cancel_grace_seconds=2.5,
        description="the A100s",
    )

    with Session(engine) as fresh:
        cluster = clusters.get_cluster(fresh, CLUSTER)
        assert (cluster.nodes, cluster.executor, cluster.environment) == (
            3,
            "docker",
            {"environment_variables": {"A": "1"}},
        )
        assert (cluster.cancel_grace_seconds, cluster.description) == (2.5, "the A100s")
        assert cluster.created_at is not None


def test_getting_an_unknown_cluster_raises_cluster_not_found(session: Session) -> None:
    with pytest.raises(ClusterNotFound):
        clusters.get_cluster(session, "nowhere")


def test_updating_a_cluster_changes_only_the_fields_given(engine: Engine, session: Session) -> None:
    created = make_cluster(session, nodes=1, description="before")
    created_updated_at = as_utc(created.updated_at)

    clusters.update_cluster(
        session,
        CLUSTER,
        ClusterUpdate(nodes=4, environment={"python": {"interpreter_path": "python3"}}),
    )
    session.commit()

    with Session(engine) as fresh:
        cluster = clusters.get_cluster(fresh, CLUSTER)
        assert (cluster.nodes, cluster.environment, cluster.description) == (
            4,
            {"python": {"interpreter_path": "python3"}},
            "before",
        )
        assert created_updated_at is not None
        assert as_utc(cluster.updated_at) >= created_updated_at  # type: ignore[operator]


def test_updating_an_unknown_cluster_raises_cluster_not_found(session: Session) -> None:
    with pytest.raises(ClusterNotFound):
        clusters.update_cluster(session, "nowhere", ClusterUpdate(nodes=2))


def test_listing_clusters_shows_them_by_name_with_workers_and_counts(
    session: Session, client: redis.Redis
) -> None:
    make_cluster(session, "zeta", nodes=2)
    make_cluster(session, "alpha", nodes=5)
    heartbeat(client, "zeta", slots=3)
    queue_run(session, "zeta")

    page = clusters.list_clusters(session, client)

    assert page.count == 2 and page.next_cursor is None
    listed = page.data
    assert [c.name for c in listed] == ["alpha", "zeta"]
    alpha, zeta = listed
    assert (alpha.slots, alpha.capacity, alpha.queued, alpha.workers) == (0, 0, 0, [])
    assert (zeta.slots, zeta.capacity, zeta.queued, zeta.active) == (3, 2, 1, 0)
    assert [w.id for w in zeta.workers] == ["w-1"]


def test_creating_a_cluster_twice_raises_already_exists(session: Session) -> None:
    make_cluster(session)

    with pytest.raises(AlreadyExists):
        clusters.create_cluster(session, ClusterCreate(name=CLUSTER))


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "a", "x-", "9lives", "a" * 33, ""])
def test_a_cluster_name_that_breaks_the_rules_is_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="cluster names are 2-32 characters"):
        ClusterCreate(name=name)


@pytest.mark.parametrize("name", ["ab", "a" * 32, "gpu-a100-x8"])
def test_names_at_the_edges_of_the_rules_are_stored(engine: Engine, name: str) -> None:
    with Session(engine) as session:
        make_cluster(session, name)

    with Session(engine) as fresh:
        assert clusters.get_cluster(fresh, name).name == name


def test_deleting_a_cluster_with_a_queued_run_raises_cluster_busy(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)
    queue_run(session)

    with pytest.raises(ClusterBusy, match="1 queued or active run"):
        clusters.delete_cluster(session, CLUSTER)

    with Session(engine) as fresh:
        assert clusters.get_cluster(fresh, CLUSTER).name == CLUSTER


def test_forced_delete_returns_the_live_runs_and_keeps_old_runs_without_a_cluster(
    engine: Engine, session: Session
) -> None:
    make_cluster(session)
    finished = queue_run(session)
    walk(session, finished, RunStatus.PREPARING, RunStatus.COMPLETED)
    queued = queue_run(session)
    running = queue_run(session)
    walk(session, running, RunStatus.RUNNING)

    live = clusters.delete_cluster(session, CLUSTER, force=True)
    clusters.finish_delete(session, CLUSTER)
    session.commit()

    assert sorted(live) == sorted([queued, running])
    with Session(engine) as fresh, pytest.raises(ClusterNotFound):
        clusters.get_cluster(fresh, CLUSTER)
    for run_id in (finished, queued, running):
        assert reload(engine, run_id).cluster is None
    assert reload(engine, finished).status == RunStatus.COMPLETED


def test_deleting_an_idle_cluster_returns_no_runs(engine: Engine, session: Session) -> None:
    make_cluster(session)

    assert clusters.delete_cluster(session, CLUSTER) == []
    clusters.finish_delete(session, CLUSTER)
    session.commit()

    with Session(engine) as fresh:
        assert fresh.get(Cluster, CLUSTER) is None


def test_a_clusters_file_creates_then_updates_clusters(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    path = tmp_path / "clusters.toml"
    path.write_text(
        '[[clusters]]\nname = "cpu"\nnodes = 2\n\n'
        '[[clusters]]\nname = "gpu"\nnodes = 1\nexecutor = "docker"\n'
    )

    assert clusters.apply_config_file(session, path) == ["cpu", "gpu"]
    session.commit()
    with Session(engine) as fresh:
        assert clusters.get_cluster(fresh, "cpu").nodes == 2
        assert clusters.get_cluster(fresh, "gpu").executor == "docker"

    path.write_text('[[clusters]]\nname = "cpu"\nnodes = 8\ndescription = "bigger"\n')
    assert clusters.apply_config_file(session, path) == ["cpu"]
    session.commit()

    with Session(engine) as fresh:
        cpu = clusters.get_cluster(fresh, "cpu")
        assert (cpu.nodes, cpu.description) == (8, "bigger")
        assert clusters.get_cluster(fresh, "gpu").nodes == 1
        assert fresh.exec(select(func.count()).select_from(Cluster)).one() == 2


def test_a_clusters_file_sets_team_scheduling_and_quotas(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    path = tmp_path / "clusters.toml"
    path.write_text(
        '[[clusters]]\nname = "gpu"\nnodes = 8\npriority_preemption = true\n'
        "fair_share_half_life_hours = 24\n\n"
        "[clusters.quotas.vision]\nslots = 4\nborrowing_slots = 4\n\n"
        '[[clusters]]\nname = "cpu"\nquotas = { nlp = { slots = 2, lending_slots = 1 } }\n'
    )
    assert clusters.apply_config_file(session, path) == ["gpu", "cpu"]
    session.commit()
    with Session(engine) as fresh:
        gpu = clusters.get_cluster(fresh, "gpu")
        assert (gpu.priority_preemption, gpu.fair_share_half_life_hours) == (True, 24)
        assert [
            (q.team, q.slots, q.borrowing_slots) for q in teams.cluster_quotas(fresh, "gpu")
        ] == [("vision", 4, 4)]
        assert [(q.team, q.lending_slots) for q in teams.cluster_quotas(fresh, "cpu")] == [
            ("nlp", 1)
        ]
        assert {t.name for t in teams.list_teams(fresh).data} == {"vision", "nlp"}

    path.write_text('[[clusters]]\nname = "gpu"\nquotas = { vision = { slots = -1 } }\n')
    with pytest.raises(InvalidInput, match="quota of 'vision'"):
        clusters.apply_config_file(session, path)
    path.write_text('[[clusters]]\nname = "gpu"\nquotas = { "Bad Team" = { slots = 1 } }\n')
    with pytest.raises(InvalidInput, match="team names are"):
        clusters.apply_config_file(session, path)
