"""Other hosts on this machine, for tests of many hosts: a network namespace joined to this
host ("host A") by a veth pair, a Docker engine of its own inside one, and an image registry
on host A that such engines push to and pull from.

Each is a context manager that leaves nothing behind when it exits, failed or not: daemons
stopped, their mounts undone, namespaces and links deleted, folders removed.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.support.services import free_port, port_open, stop_process, wait_until

# The subnets links take their /30 from; host A's end is .1, the other host's .2.
LINK_NETWORK = ipaddress.ip_network("10.213.0.0/16")


@dataclass(frozen=True)
class Link:
    """A host of its own (a network namespace) and the veth pair that joins it to host A."""

    namespace: str
    here: str  # the veth end on host A
    there: str  # the veth end inside the other host
    address_a: str  # host A's address on the link
    address_b: str  # the other host's address on the link

    @property
    def subnet(self) -> str:
        return f"{self.address_a}/30"

    def enter(self, *command: str) -> list[str]:
        """``command`` run inside this host's network (only its network: the file system and
        its cgroup mounts stay this machine's, as a Docker engine needs)."""
        return ["nsenter", f"--net=/run/netns/{self.namespace}", *command]

    def cut(self) -> None:
        _ip("link", "set", self.here, "down")


def _ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of ``LINK_NETWORK`` that no interface here uses (other tests make links too)."""
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    used = {ipaddress.ip_interface(word).network for word in shown.split() if "/" in word}
    while True:
        index = secrets.randbelow(LINK_NETWORK.num_addresses // 4)
        subnet = ipaddress.ip_network(f"{LINK_NETWORK.network_address + 4 * index}/30")
        if not any(subnet.overlaps(other) for other in used):
            return subnet  # type: ignore[return-value]


@contextmanager
def network_host() -> Iterator[Link]:
    """A new host: its own network namespace, a veth pair to host A, a default route via
    host A (so it reaches any of host A's addresses, and nothing beyond this machine)."""
    tag = secrets.token_hex(2)
    first, second = list(_free_subnet().hosts())
    link = Link(f"ryb-{tag}", f"rya{tag}", f"ryb{tag}", str(first), str(second))
    _ip("netns", "add", link.namespace)
    try:
        _ip("link", "add", link.here, "type", "veth", "peer", "name", link.there)
        _ip("link", "set", link.there, "netns", link.namespace)
        _ip("addr", "add", f"{link.address_a}/30", "dev", link.here)
        _ip("link", "set", link.here, "up")
        _ip("addr", "add", f"{link.address_b}/30", "dev", link.there, namespace=link.namespace)
        _ip("link", "set", link.there, "up", namespace=link.namespace)
        _ip("link", "set", "lo", "up", namespace=link.namespace)
        _ip("route", "add", "default", "via", link.address_a, namespace=link.namespace)
        yield link
    finally:
        subprocess.run(["ip", "link", "del", link.here], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", link.namespace], capture_output=True, check=False)


@dataclass(frozen=True)
class DockerEngine:
    """A Docker engine of its own: its own image store, reached through its socket."""

    socket: Path
    log: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment to use this engine (``docker`` CLI, SDK)."""
        return {"DOCKER_HOST": self.url}

    def client(self) -> closing[docker.DockerClient]:
        """The SDK's client of this engine, closed at the end of a ``with``."""
        return closing(docker.DockerClient(base_url=self.url, timeout=120))

    def ready(self) -> bool:
        try:
            with self.client() as engine:
                return bool(engine.ping())
        except docker.errors.DockerException:
            return False

    def image_ids(self) -> dict[str, str]:
        """Tag -> image id of every tagged image in this engine."""
        with self.client() as engine:
            return {tag: image.id for image in engine.images.list() for tag in image.tags}

    def copy_image(self, image: str) -> None:
        """``docker save`` from this machine's engine into this one: the image keeps its id,
        so both engines compute the same build hash from it."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        try:
            subprocess.run(
                ["docker", "-H", self.url, "load", "--quiet"],
                stdin=save.stdout,
                check=True,
                capture_output=True,
            )
        finally:
            assert save.stdout is not None
            save.stdout.close()
            if save.wait() != 0:
                raise RuntimeError(f"docker save {image} failed")


@contextmanager
def private_docker_engine(
    link: Link, logs: Path, insecure_registries: list[str]
) -> Iterator[DockerEngine]:
    """A dockerd inside ``link``'s host, with its own data, state and socket (this machine's
    shared engine is never restarted nor reconfigured), no bridge and no iptables rules
    (runs use ``network: none``), trusting these plain-HTTP registries (addresses or
    subnets). Stopped, its mounts undone and its folders removed on exit."""
    # Short: the engine's containerd socket lives under it (a socket path has 107 bytes).
    state = Path(tempfile.mkdtemp(prefix="ryd-"))
    logs.mkdir(parents=True, exist_ok=True)
    engine = DockerEngine(state / "docker.sock", logs / f"dockerd-{link.namespace}.log")
    (state / "daemon.json").write_text(json.dumps({}))  # not this machine's daemon.json
    command = link.enter(
        shutil.which("dockerd") or "dockerd",
        "--config-file", str(state / "daemon.json"),
        "--data-root", str(state / "data"),
        "--exec-root", str(state / "exec"),
        "--pidfile", str(state / "docker.pid"),
        "-H", engine.url,
        "--bridge", "none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        *[f"--insecure-registry={registry}" for registry in insecure_registries],
    )  # fmt: skip
    with open(engine.log, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(engine.ready, 60, 0.2, what=f"dockerd in {link.namespace}")
        yield engine
    finally:
        stop_process(process, timeout=60)
        _unmount_under(state)
        shutil.rmtree(state, ignore_errors=True)


def _unmount_under(folder: Path) -> None:
    """Whatever an engine left mounted below ``folder`` (nothing, when it stopped cleanly)."""
    prefix = f"{folder}/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextmanager
def image_registry(folder: Path, address: str) -> Iterator[str]:
    """A real image registry (Debian's ``docker-registry``) listening on ``address`` of
    host A, plain HTTP, storing in ``folder``; yields its ``host:port``."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "version": 0.1,
                "log": {"level": "info", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": str(folder / "storage")}},
                "http": {"addr": f"{address}:{port}"},
            }
        )
    )
    with open(folder / "registry.log", "ab") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: port_open(port, address), 30, 0.1, what="docker-registry")
        yield f"{address}:{port}"
    finally:
        stop_process(process)
