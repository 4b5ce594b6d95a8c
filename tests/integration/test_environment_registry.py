"""Many hosts share built environments through a real image registry: the worker that
built ``runyard-env:<hash>`` pushes it, a worker on another host pulls it instead of
building. Two Docker engines of their own (each with its own image store, inside its own
network namespace) and Debian's ``docker-registry`` on host A, so an image really travels."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from protocol.build_specs import build_spec
from runyard.errors import ExecutionFailed
from tests.support.hosts import (
    DockerEngine,
    Link,
    image_registry,
    network_host,
    private_docker_engine,
)
from tests.support.runs import packages_environment, submit, write
from tests.support.services import RedisServer, Stack, free_port, stop_process, unique
from tests.support.wheels import make_wheel, offline_index
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


@pytest.fixture(scope="module")
def stack_on_a(host_b: Link, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis and the API on host A, reachable from host B too."""
    folder = tmp_path_factory.mktemp("stack")
    redis = RedisServer(free_port(), folder / "redis", bind=f"127.0.0.1 {host_b.address_a}")
    redis.start()
    live = Stack(root=folder / "stack", redis=redis, host="0.0.0.0")
    try:
        live.start()
        yield live
    finally:
        live.stop()
        redis.stop()


def host_settings(engine: DockerEngine, wheelhouse: Path, folder: Path) -> dict[str, str]:
    """A worker host: its own Docker engine, its pip configured for an offline wheel folder
    (the test's package index), its own environment cache."""
    return offline_index(wheelhouse, folder / "environments", **engine.env)


SCRIPT = "import tinypkg\nprint('TINY', tinypkg.VERSION, flush=True)\n"


def test_a_worker_on_another_host_pulls_the_environment_instead_of_building_it(
    stack_on_a: Stack,
    host_b: Link,
    engine_a: DockerEngine,
    engine_b: DockerEngine,
    image_store: str,
    run_image: str,
    tmp_path: Path,
) -> None:
    stack, client = stack_on_a, stack_on_a.client()
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "tinypkg", "1.0")
    cluster = unique("shared")
    container = {"image": run_image, "memory_mib": 256, "network": "none"}
    client.create_cluster(
        cluster, nodes=2, executor="docker", container={**container, "registry": image_store}
    )
    folder = write(tmp_path / "src", {"train.py": SCRIPT})
    environment = packages_environment("shared-tiny", ["tinypkg==1.0"])

    # Host A: its worker builds the environment and pushes it.
    worker_a = stack.start_worker(
        cluster, name=unique("host-a"), env=host_settings(engine_a, wheelhouse, tmp_path / "a")
    )
    first = submit(stack.url, folder, "train.py", cluster, environment=environment)
    first.wait_for_completion()
    log_a = client.logs(first.id)
    assert "TINY 1.0" in log_a
    [build_hash] = re.findall(r"Environment ([0-9a-f]{32}): built in", log_a)
    remote = f"{image_store}/runyard-env:{build_hash}"
    assert f"[runyard] {remote}: not in the registry" in log_a  # asked first, then built
    assert f"[runyard] Pushed {remote} in " in log_a
    listed = httpx.get(f"http://{image_store}/v2/runyard-env/tags/list").json()
    assert build_hash in listed["tags"]
    stop_process(worker_a)

    # Host B: its worker, on another network host with another engine, pulls it.
    name_b = unique("host-b")
    stack.start_worker(
        cluster,
        name=name_b,
        prefix=host_b.enter(),
        env={
            **host_settings(engine_b, wheelhouse, tmp_path / "b"),
            "RUNYARD_REDIS_URL": stack.redis.url_at(host_b.address_a),
            "RUNYARD_API_URL": f"http://{host_b.address_a}:{stack.port}",
        },
    )
    second = submit(stack.url, folder, "train.py", cluster, environment=environment)
    second.wait_for_completion()
    log_b = client.logs(second.id)
    assert client.get_run(second.id)["worker_id"] == name_b
    assert "TINY 1.0" in log_b
    assert f"[runyard] Pulled runyard-env:{build_hash} from {image_store} in " in log_b
    for building in ("resolving on this host", "building image", "Step 1/", "built in"):
        assert building not in log_b, log_b
    image = f"runyard-env:{build_hash}"
    assert engine_b.image_ids()[image] == engine_a.image_ids()[image]


def test_a_plain_http_registry_the_engine_does_not_trust_is_named_in_the_error(
    engine_b: DockerEngine, engine_a_network: Link, tmp_path: Path
) -> None:
    # A real registry, on an address outside the engine's insecure-registries.
    with (
        image_registry(tmp_path / "untrusted", engine_a_network.address_a) as untrusted,
        engine_b.client() as client,
        pytest.raises(ExecutionFailed) as pulling,
    ):
        registry.pull(client, untrusted, secrets.token_hex(16), lambda _: None)
    assert str(pulling.value).startswith(f"cannot pull from image registry {untrusted}: ")
    assert str(pulling.value).endswith(
        f"(plain HTTP: add {untrusted} to the engine's insecure-registries)"
    )


def plant(
    engine: DockerEngine, image_store: str, build_hash: str, dockerfile: str, folder: Path
) -> str:
    """What anyone who can push to the registry could do: an image of their own under an
    environment's tag. Pushed from host B's engine, which keeps nothing of it; its id."""
    folder.mkdir(parents=True)
    (folder / "marker").write_text("planted\n")
    (folder / "Dockerfile").write_text(dockerfile)
    with engine.client() as client:
        image, _ = client.images.build(path=str(folder), tag=f"runyard-env:{build_hash}")
        registry.push(client, image_store, build_hash, lambda _: None)
        client.images.remove(f"runyard-env:{build_hash}")
    return image.id


@pytest.mark.parametrize("forgery", ["another base", "a wrong label"])
def test_an_image_planted_under_an_environments_tag_is_not_used(
    stack_on_a: Stack,
    engine_a: DockerEngine,
    engine_b: DockerEngine,
    image_store: str,
    run_image: str,
    tmp_path: Path,
    forgery: str,
) -> None:
    """A tag proves nothing: the worker checks that a pulled image names the environment
    and stands on its own base image, else removes it, says why, and builds its own."""
    stack, client = stack_on_a, stack_on_a.client()
    version = {"another base": "1.0", "a wrong label": "2.0"}[forgery]
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "trustpkg", version)
    environment = packages_environment("trusted", [f"trustpkg=={version}"])
    spec = build_spec(environment.to_dict())
    assert spec is not None
    build_hash = spec.build_digest(f"docker:{engine_a.image_ids()[run_image]}")
    if forgery == "another base":  # the right labels, on nothing of the worker's
        labels = f'LABEL runyard.env="{build_hash}" runyard.env.spec="{spec.digest()}"'
        dockerfile, why = (
            f"FROM scratch\nCOPY marker /marker\n{labels}\n",
            (f"it is not built on this worker's {run_image}"),
        )
    else:  # the right base, labelled for something else
        dockerfile = f"FROM {run_image}\nCOPY marker /marker\nLABEL runyard.env=forged\n"
        why = "its labels do not name this environment (runyard.env=forged)"
    planted = plant(engine_b, image_store, build_hash, dockerfile, tmp_path / "planted")

    cluster = unique("trust")
    container = {"image": run_image, "memory_mib": 256, "network": "none"}
    client.create_cluster(
        cluster, nodes=1, executor="docker", container={**container, "registry": image_store}
    )
    worker = stack.start_worker(
        cluster, name=unique("host-a"), env=host_settings(engine_a, wheelhouse, tmp_path / "a")
    )
    script = "import trustpkg\nprint('TRUST', trustpkg.VERSION, flush=True)\n"
    folder = write(tmp_path / "src", {"train.py": script})
    try:
        run = submit(stack.url, folder, "train.py", cluster, environment=environment)
        run.wait_for_completion()
    finally:
        stop_process(worker)
    log = client.logs(run.id)
    remote = f"{image_store}/runyard-env:{build_hash}"
    assert f"[runyard] Pulled runyard-env:{build_hash} from {image_store} in " in log
    assert f"[runyard] {remote}: not used, {why}; building it here" in log
    assert f"[runyard] Environment {build_hash}: built in " in log
    assert f"TRUST {version}" in log
    images = engine_a.image_ids()
    assert images[f"runyard-env:{build_hash}"] != planted
    assert planted not in images.values()  # the planted image is gone from the worker
