"""A deployment's worker pools each get a token bound to their own clusters at API start
(RUNYARD_BOOTSTRAP_WORKER_TOKENS), never one token that serves every cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from api.app import bootstrap_worker_pools, register_bootstrap_tokens
from protocol.settings import Settings
from runyard.errors import Unauthorized
from store.db import make_engine, migrate
from store.tokens import Actor, authenticate

CPU_TOKEN = "ryt_cpu-pool-token"
GPU_TOKEN = "ryt_gpu-pool-token"
POOL_TOKENS = {
    "RUNYARD_BOOTSTRAP_WORKER_TOKEN_CPU": CPU_TOKEN,
    "RUNYARD_BOOTSTRAP_WORKER_TOKEN_GPU_BIG": GPU_TOKEN,
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'runyard.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def settings(tmp_path: Path, **values: str) -> Settings:
    return Settings(data_dir=tmp_path, secret_key="k" * 32, **values)  # type: ignore[arg-type]


def who(engine: Engine, secret: str) -> Actor:
    with Session(engine) as db:
        return authenticate(db, b"k" * 32, secret)


def test_each_worker_pool_gets_a_token_bound_to_its_own_clusters(
    engine: Engine, tmp_path: Path
) -> None:
    pools = "cpu=cpu gpu-big=gpu,gpu-big"
    register_bootstrap_tokens(
        engine, settings(tmp_path, bootstrap_worker_tokens=pools), POOL_TOKENS
    )

    cpu = who(engine, CPU_TOKEN)
    assert (cpu.name, cpu.role, cpu.clusters) == ("bootstrap-worker-cpu", "worker", {"cpu"})
    assert cpu.serves("cpu") and not cpu.serves("gpu")
    gpu = who(engine, GPU_TOKEN)
    assert gpu.clusters == {"gpu", "gpu-big"}
    assert not gpu.serves("cpu")


def test_pools_may_be_separated_by_semicolons() -> None:
    pools = bootstrap_worker_pools("cpu=cpu; gpu-big=gpu", POOL_TOKENS)
    assert [(p.name, p.clusters) for p in pools] == [("cpu", ["cpu"]), ("gpu-big", ["gpu"])]
    assert pools[0].token.get_secret_value() == CPU_TOKEN


def test_starting_again_registers_nothing_twice(engine: Engine, tmp_path: Path) -> None:
    config = settings(tmp_path, bootstrap_worker_tokens="cpu=cpu")
    register_bootstrap_tokens(engine, config, POOL_TOKENS)
    register_bootstrap_tokens(engine, config, POOL_TOKENS)
    assert who(engine, CPU_TOKEN).clusters == {"cpu"}


def test_a_pool_bound_to_fewer_clusters_loses_the_others_at_the_next_start(
    engine: Engine, tmp_path: Path
) -> None:
    wide = settings(tmp_path, bootstrap_worker_tokens="cpu=cpu,gpu")
    register_bootstrap_tokens(engine, wide, POOL_TOKENS)
    assert who(engine, CPU_TOKEN).serves("gpu")

    narrow = settings(tmp_path, bootstrap_worker_tokens="cpu=cpu")
    register_bootstrap_tokens(engine, narrow, POOL_TOKENS)
    assert not who(engine, CPU_TOKEN).serves("gpu")


def test_no_pools_registers_no_worker_token(engine: Engine, tmp_path: Path) -> None:
    register_bootstrap_tokens(engine, settings(tmp_path), POOL_TOKENS)
    with pytest.raises(Unauthorized):
        who(engine, CPU_TOKEN)


def test_a_pool_without_its_token_stops_the_start(engine: Engine, tmp_path: Path) -> None:
    config = settings(tmp_path, bootstrap_worker_tokens="cpu=cpu gpu=gpu")
    with pytest.raises(ValueError, match="set RUNYARD_BOOTSTRAP_WORKER_TOKEN_GPU"):
        register_bootstrap_tokens(engine, config, POOL_TOKENS)


@pytest.mark.parametrize(
    ("pools", "complaint"),
    [
        ("cpu", "is not pool=cluster"),
        ("cpu=", "is not pool=cluster"),
        ("=cpu", "is not pool=cluster"),
        ("cpu=cpu cpu=gpu", "named twice"),
        ("CPU=cpu", "pool 'CPU'"),
        ("cpu=Not_A_Cluster", "pool 'cpu'"),
    ],
)
def test_an_unclear_pool_binding_stops_the_start(pools: str, complaint: str) -> None:
    environ = {**POOL_TOKENS, "RUNYARD_BOOTSTRAP_WORKER_TOKEN_CPU": CPU_TOKEN}
    with pytest.raises(ValueError, match=complaint):
        bootstrap_worker_pools(pools, environ)


def test_a_pool_token_equal_to_the_admin_token_is_refused(engine: Engine, tmp_path: Path) -> None:
    config = settings(tmp_path, bootstrap_admin_token=CPU_TOKEN, bootstrap_worker_tokens="cpu=cpu")
    with pytest.raises(ValueError, match="bootstrap-admin and bootstrap-worker-cpu are the same"):
        register_bootstrap_tokens(engine, config, POOL_TOKENS)
    with pytest.raises(Unauthorized):
        who(engine, CPU_TOKEN)  # refused before anything was registered


def test_the_single_worker_token_still_serves_every_cluster(engine: Engine, tmp_path: Path) -> None:
    """`runyard up` and older deployments keep RUNYARD_BOOTSTRAP_WORKER_TOKEN."""
    register_bootstrap_tokens(
        engine, settings(tmp_path, bootstrap_worker_token="ryt_every-cluster"), {}
    )
    assert who(engine, "ryt_every-cluster").clusters == {"*"}


def test_pools_retire_the_token_an_earlier_deployment_bound_to_every_cluster(
    engine: Engine, tmp_path: Path
) -> None:
    """Upgrading from the single worker token: whoever read it must not keep it."""
    register_bootstrap_tokens(engine, settings(tmp_path, bootstrap_worker_token="ryt_old"), {})
    assert who(engine, "ryt_old").clusters == {"*"}

    pools = settings(tmp_path, bootstrap_worker_tokens="cpu=cpu")
    register_bootstrap_tokens(engine, pools, POOL_TOKENS)
    with pytest.raises(Unauthorized):
        who(engine, "ryt_old")
    assert who(engine, CPU_TOKEN).clusters == {"cpu"}


def test_a_deployment_that_keeps_the_single_token_keeps_it_beside_pools(
    engine: Engine, tmp_path: Path
) -> None:
    both = settings(tmp_path, bootstrap_worker_token="ryt_every", bootstrap_worker_tokens="cpu=cpu")
    register_bootstrap_tokens(engine, both, POOL_TOKENS)
    register_bootstrap_tokens(engine, both, POOL_TOKENS)
    assert who(engine, "ryt_every").clusters == {"*"}
