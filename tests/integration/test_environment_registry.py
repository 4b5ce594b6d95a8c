"""Many hosts share built environments through a real image registry: the worker that
built ``runyard-env:<hash>`` pushes it, a worker on another host pulls it instead of
building. Two Docker engines of their own (each with its own image store, inside its own
network namespace) and Debian's ``docker-registry`` on host A, so an image really travels."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.errors import ExecutionFailed
from tests.support.hosts import (
    DockerEngine,
    Link,
    image_registry,
    network_host,
    private_docker_engine,
)
from tests.support.services import free_port
from worker.environments import registry


@pytest.fixture(scope="module")
def host_b() -> Iterator[Link]:
    with network_host() as link:
        yield link


@pytest.fixture(scope="module")
def engine_a_network() -> Iterator[Link]:
    """Host A's engine gets a network of its own too: this machine's shared engine trusts
    no plain-HTTP registry but 127.0.0.0/8, and is never restarted to trust one."""
    with network_host() as link:
        yield link


@pytest.fixture(scope="module")
def image_store(host_b: Link, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The registry, on host A's address of the link to host B; both engines reach it."""
    with image_registry(tmp_path_factory.mktemp("registry"), host_b.address_a) as address:
        yield address


def _engine(
    link: Link, host_b: Link, run_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockerEngine]:
    logs = tmp_path_factory.mktemp("engine")
    with private_docker_engine(link, logs, insecure_registries=[host_b.subnet]) as engine:
        engine.copy_image(run_image)
        yield engine


@pytest.fixture(scope="module")
def engine_a(
    engine_a_network: Link, host_b: Link, run_image: str, tmp_path_factory
) -> Iterator[DockerEngine]:
    yield from _engine(engine_a_network, host_b, run_image, tmp_path_factory)


@pytest.fixture(scope="module")
def engine_b(host_b: Link, run_image: str, tmp_path_factory) -> Iterator[DockerEngine]:
    yield from _engine(host_b, host_b, run_image, tmp_path_factory)


def build_by_hand(engine: DockerEngine, base: str, folder: Path) -> tuple[str, str]:
    """An environment image as a build would leave it (``runyard-env:<hash>``, FROM the
    base, one layer more); returns its hash and image id."""
    digest = secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "marker").write_text(f"built on engine A: {digest}\n")
    (folder / "Dockerfile").write_text(f"FROM {base}\nCOPY marker /marker\n")
    with engine.client() as client:
        image, _ = client.images.build(path=str(folder), tag=f"runyard-env:{digest}", rm=True)
    return digest, image.id


def test_an_image_pushed_from_one_engine_is_pulled_on_another_host(
    engine_a: DockerEngine, engine_b: DockerEngine, image_store: str, run_image: str, tmp_path
) -> None:
    digest, image_id = build_by_hand(engine_a, run_image, tmp_path / "context")
    assert f"runyard-env:{digest}" not in engine_b.image_ids()

    pushed: list[str] = []
    with engine_a.client() as client:
        registry.push(client, image_store, digest, pushed.append)
    assert pushed[0] == f"Pushing runyard-env:{digest} to {image_store}"
    assert pushed[-1].startswith(f"Pushed {image_store}/runyard-env:{digest} in ")
    # One line per layer as it finishes: the new one sent, the base's sent with it (the
    # registry had nothing yet), never one per chunk.
    layers = [line for line in pushed if line.startswith("layer ")]
    assert len(layers) == 2 and all(": sent, " in line for line in layers), pushed
    assert "2 layer(s) sent" in pushed[-1]

    pulled: list[str] = []
    with engine_b.client() as client:
        assert registry.pull(client, image_store, digest, pulled.append) is True
        marker = client.containers.run(
            f"runyard-env:{digest}", ["cat", "/marker"], network_mode="none", remove=True
        )
    assert marker.decode() == f"built on engine A: {digest}\n"
    assert engine_b.image_ids()[f"runyard-env:{digest}"] == image_id
    assert pulled[0] == f"Pulling {image_store}/runyard-env:{digest}"
    # Both layers travel: host B's base came from `docker load`, not from this registry, so
    # its engine cannot know the layer's digest there.
    assert pulled[-1].startswith(f"Pulled runyard-env:{digest} from {image_store} in ")
    assert "2 layer(s) received" in pulled[-1], pulled
    assert len([line for line in pulled if line.startswith("layer ")]) == 2, pulled
    # The registry's name was only for the transfer: the cache's name is the image's only
    # one, so evicting it frees the image.
    for engine in (engine_a, engine_b):
        assert not [tag for tag in engine.image_ids() if tag.startswith(image_store)]


def test_pulling_a_build_the_registry_does_not_have_answers_false(
    engine_b: DockerEngine, image_store: str
) -> None:
    digest = secrets.token_hex(16)
    notes: list[str] = []
    with engine_b.client() as client:
        assert registry.pull(client, image_store, digest, notes.append) is False
    assert notes[-1] == f"{image_store}/runyard-env:{digest}: not in the registry"
    assert f"runyard-env:{digest}" not in engine_b.image_ids()


def test_an_unreachable_registry_is_a_clear_error(
    engine_a: DockerEngine, engine_b: DockerEngine, host_b: Link, run_image: str, tmp_path
) -> None:
    nowhere = f"{host_b.address_a}:{free_port()}"  # trusted by the engines; nothing listens
    with engine_b.client() as client, pytest.raises(ExecutionFailed) as pulling:
        registry.pull(client, nowhere, secrets.token_hex(16), lambda _: None)
    assert str(pulling.value).startswith(f"cannot pull from image registry {nowhere}: ")
    assert "connection refused" in str(pulling.value)

    digest, _ = build_by_hand(engine_a, run_image, tmp_path / "context")
    with engine_a.client() as client, pytest.raises(ExecutionFailed) as pushing:
        registry.push(client, nowhere, digest, lambda _: None)
    assert str(pushing.value).startswith(f"cannot push to image registry {nowhere}: ")
    assert "connection refused" in str(pushing.value)
    assert [tag for tag in engine_a.image_ids() if digest in tag] == [f"runyard-env:{digest}"]
