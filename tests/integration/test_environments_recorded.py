"""Each run records the environment it ran with, and environments build ahead of any run
(``env.build(ws)``, ``runyard env build``), end to end: real Redis, API, scheduler and
Celery workers with the local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runyard.core import Environment, Workspace
from runyard.core.conda_dependencies import CondaDependencies
from runyard.core.environment_builds import build, image_details
from runyard.errors import InvalidInput, NotFound
from runyard.status import RunStatus
from tests.integration.test_cli import cli, ok, one_line_error
from tests.support.environments import BUILT, report_as_a_worker
from tests.support.runs import CLUSTERS_OWN, service_lines, submit, write
from tests.support.services import Stack, unique
from tests.support.wheels import make_wheel, offline_index


def plain_environment(name: str, version: str | None = "2") -> Environment:
    """An environment with nothing to build: the worker's own Python on a local cluster."""
    env = Environment(name)
    env.version = version
    return env


def shown(stack: Stack, run_id: str) -> dict[str, str]:
    """``runyard show``'s environment lines, label to value (the packages under theirs)."""
    lines = ok(stack, "show", run_id).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("environment "))
    rows: dict[str, str] = {}
    label = ""
    for line in lines[start:]:
        label = line[:16].strip() or label
        value = line[17:]
        rows[label] = f"{rows[label]}\n{value}" if label in rows else value
    return rows


def test_a_completed_run_shows_the_environment_its_worker_ran_it_with(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("envrec")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    folder = write(tmp_path / "src", {"train.py": "print('trained')\n"})

    env = plain_environment("tiny", version=None)
    run = submit(stack.url, folder, "train.py", cluster, environment=env)
    details = run.wait_for_completion(show_output=False)

    recorded = details["environmentUsed"]
    assert (recorded["name"], recorded["hash"], recorded["packages"]) == ("tiny", None, [])
    assert run.get_details()["environmentUsed"] == details["environmentUsed"]
    assert stack.client().get_run(run.id)["environment_used"] == details["environmentUsed"]
    assert shown(stack, run.id) == {
        "environment": "tiny",
        "env hash": "-",
        "env build": "nothing to build",
        "packages": "0",
    }
    listed = stack.client().list_runs(experiment=run.experiment.name)
    assert [r["id"] for r in listed] == [run.id] and "environment_used" not in listed[0]


def test_a_forged_or_oversize_environment_report_is_dropped_and_a_good_one_stands(
    stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("forged")
    stack.client().create_cluster(cluster, nodes=1)  # no worker: the test reports as one
    run = submit(stack.url, write(tmp_path / "src", {"a.py": "print(1)\n"}), "a.py", cluster)
    api = stack.client()

    report_as_a_worker(stack, run.id, BUILT)
    assert api.get_run(run.id, fresh=True)["environment_used"] == BUILT
    rows = shown(stack, run.id)
    assert (rows["environment"], rows["env hash"]) == ("sklearn:3", BUILT["hash"])
    assert (rows["env build"], rows["env venv"]) == ("built in 12.5 s", BUILT["venv"])
    assert rows["packages"].splitlines() == ["3", *BUILT["packages"]]

    oversize = {**BUILT, "packages": [f"pkg{i}==1.0" for i in range(2001)]}
    for forged in (oversize, {**BUILT, "hash": "$(rm -rf /)"}, {**BUILT, "admin": True}):
        report_as_a_worker(stack, run.id, forged)
        after = api.get_run(run.id, fresh=True)
        assert after["status"] == "Starting"
        assert after["environment_used"] == BUILT

    cached = {**BUILT, "cached": True, "build_seconds": 0.0}  # a later attempt's, say
    report_as_a_worker(stack, run.id, cached)
    assert api.get_run(run.id, fresh=True)["environment_used"] == cached
    assert shown(stack, run.id)["env build"] == "cached"
    api.cancel(run.id)


def test_an_environment_build_ends_completed_with_no_script_and_records_what_it_built(
    stack: Stack, workers, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = unique("builds")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    workspace = Workspace(url=stack.url)
    env = plain_environment("tiny-build", "7")

    started = build(env, workspace, image_build_compute=cluster)
    done = started.wait_for_completion(show_output=True)

    printed = capsys.readouterr().out
    assert "[runyard] Environment ready; an environment build runs no script" in printed
    assert printed.rstrip().endswith("Image Build Status: Succeeded")
    assert done is started and started.status == "Succeeded"
    assert started.environment_used is not None
    assert started.environment_used.items() >= {"name": "tiny-build", "version": "7"}.items()
    assert (started.environment_used["hash"], started.environment_used["packages"]) == (None, [])
    run = stack.client().get_run(started.run_id)
    assert (run["experiment"], run["display_name"]) == ("environment-builds", "build tiny-build:7")
    assert (run["build_only"], run["script"], run["snapshot_digest"]) == (True, "", None)
    assert run["status"] == "Completed" and run["running_at"] is None  # nothing ever ran
    lines = service_lines(started.get_log())
    assert lines[-1] == "[runyard] Environment ready; an environment build runs no script"
    assert not any(line.startswith("[runyard] Running ") for line in lines)
    assert started.log_url == f"{stack.url}/runs/{started.run_id}"

    details = image_details(env, workspace)
    assert (details["runId"], details["hash"], details.packages) == (started.run_id, None, [])
    assert (details["dockerImage"], details.image, details.image_exist) == (None, None, False)


def test_image_details_name_the_built_image_in_its_clusters_registry(
    stack: Stack, tmp_path: Path
) -> None:
    cluster = unique("shared")
    registry = "registry.test:5000/team"
    container = {"image": "runyard-run-base:bookworm", "registry": registry}
    stack.client().create_cluster(cluster, nodes=1, executor="docker", container=container)
    folder = write(tmp_path / "src", {"a.py": "print(1)\n"})
    run = submit(stack.url, folder, "a.py", cluster, environment=CLUSTERS_OWN)
    name = unique("imaged")
    image = f"runyard-env:{BUILT['hash']}"
    used = {**BUILT, "name": name, "image": image, "venv": None}
    report_as_a_worker(stack, run.id, used, RunStatus.COMPLETED)  # as a Docker worker would
    assert stack.client().get_run(run.id, fresh=True)["status"] == "Completed"

    details = image_details(plain_environment(name, "3"), Workspace(url=stack.url))

    assert details["dockerImage"] == {"name": image, "registry": {"address": registry}}
    assert (details.image, details.image_exist) == (f"{registry}/{image}", True)
    assert (details.repository, details.registry) == (image, registry)
    assert (details["hash"], details.packages) == (BUILT["hash"], BUILT["packages"])
    assert (details["runId"], details.interpreter_path) == (run.id, None)


def test_image_details_of_an_environment_never_built_say_so(stack: Stack) -> None:
    with pytest.raises(NotFound, match="environment never-built:1 has not been built yet"):
        image_details(plain_environment("never-built", "1"), Workspace(url=stack.url))


def test_a_build_goes_to_the_default_cluster_or_says_there_is_none(stack: Stack) -> None:
    workspace = Workspace(url=stack.url)
    api = stack.client()
    if not any(c.get("is_default") for c in api.list_clusters()):
        with pytest.raises(InvalidInput, match="no default cluster"):
            build(plain_environment("nowhere"), workspace)
    cluster = unique("dflt")
    api.create_cluster(cluster, nodes=1)
    api.update_cluster(cluster, is_default=True)

    started = build(plain_environment("somewhere"), workspace)

    assert api.get_run(started.run_id)["cluster"] == cluster
    api.cancel(started.run_id)


def test_a_build_a_cluster_cannot_run_is_refused_before_anything_is_stored(stack: Stack) -> None:
    cluster = unique("hostonly")
    stack.client().create_cluster(cluster, nodes=1)
    env = plain_environment("boxed")
    env.docker.base_image = "runyard-run-base:bookworm"

    with pytest.raises(InvalidInput, match="asks for a Docker container"):
        build(env, Workspace(url=stack.url), image_build_compute=cluster)

    assert stack.client().cluster_runs(cluster) == []


def test_runyard_env_build_waits_streams_the_log_and_prints_what_was_built(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("clibuild")
    ok(stack, "cluster", "create", cluster)
    workers.start(cluster)
    (tmp_path / "env.yml").write_text("name: from-file\nversion: '4'\n")

    result = cli(stack, "env", "build", "--file", str(tmp_path / "env.yml"), "--cluster",
                 cluster, "--wait", timeout=120)  # fmt: skip

    assert result.returncode == 0, result.stderr
    run_id = result.stderr.split(" as run ")[1].split()[0]
    assert result.stderr.strip().splitlines()[-1] == f"run {run_id} Completed"
    assert "[runyard] Environment ready; an environment build runs no script" in result.stdout
    assert "environment      from-file:4" in result.stdout
    assert "env build        nothing to build" in result.stdout
    queued = cli(stack, "env", "build", "-f", str(tmp_path / "env.yml"), "-c", cluster, "--json")
    assert json.loads(queued.stdout)["display_name"] == "build from-file:4"


def test_runyard_env_build_errors_are_one_line_and_an_exit_code(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "env.yml").write_text("name: x\n")
    one_line_error(cli(stack, "env", "build"), 2, "name a registered environment")
    both = cli(stack, "env", "build", "x", "--file", str(tmp_path / "env.yml"))
    one_line_error(both, 2, "not both")
    nowhere = cli(stack, "env", "build", "--file", str(tmp_path / "env.yml"), "-c", "no-such")
    one_line_error(nowhere, 3, "no-such")


def test_runyard_env_build_builds_a_registered_environment_by_name(stack: Stack, workers) -> None:
    cluster = unique("regbuild")
    ok(stack, "cluster", "create", cluster)
    workers.start(cluster)
    name = unique("registered")
    registered = plain_environment(name, None).register(Workspace(url=stack.url))

    result = cli(stack, "env", "build", name, "-c", cluster, "--wait", timeout=120)

    assert result.returncode == 0, result.stderr
    assert f"environment      {name}:{registered.version}" in result.stdout


def test_a_build_ahead_records_its_packages_and_the_next_run_finds_them_built(
    stack: Stack, workers, tmp_path: Path
) -> None:
    wheelhouse = tmp_path / "wheelhouse"  # the host's offline package index
    make_wheel(wheelhouse, "tinypkg", "1.0")
    make_wheel(wheelhouse, "other-pkg", "2.0", requires=["tinypkg>=1"])
    cluster = unique("ahead")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    workspace = Workspace(url=stack.url)
    env = Environment(unique("pkgs"))
    env.python.conda_dependencies = CondaDependencies.create(
        pip_packages=["other-pkg", "tinypkg==1.0"]
    )

    built = env.build(workspace, image_build_compute=cluster).wait_for_completion(False)

    assert built.status == "Succeeded", built.get_log()
    used = built.environment_used
    assert used is not None and used["hash"] is not None and not used["cached"]
    assert used["packages"] == ["other-pkg==2.0", "tinypkg==1.0"]
    details = env.get_image_details(workspace)
    assert (details["hash"], details.packages) == (used["hash"], used["packages"])
    assert details.interpreter_path == f"{used['venv']}/bin/python"

    folder = write(tmp_path / "src", {"t.py": "import tinypkg\nprint('tiny', tinypkg.VERSION)\n"})
    run = submit(stack.url, folder, "t.py", cluster, environment=env)
    run.wait_for_completion()

    recorded = run.get_details()["environmentUsed"]
    assert recorded["cached"] and recorded["hash"] == used["hash"]
    assert recorded["packages"] == used["packages"]
    rows = shown(stack, run.id)
    assert (rows["env hash"], rows["env build"]) == (used["hash"], "cached")
    assert rows["packages"].splitlines() == ["2", "other-pkg==2.0", "tinypkg==1.0"]


def test_image_details_of_a_registered_version_come_from_a_build_of_its_content(
    stack: Stack, workers, tmp_path: Path
) -> None:
    wheelhouse = tmp_path / "wheelhouse"  # the host's offline package index
    make_wheel(wheelhouse, "tinypkg", "1.0")
    cluster, idle = unique("regimage"), unique("idle")
    stack.client().create_cluster(cluster, nodes=1)
    stack.client().create_cluster(idle, nodes=1)  # no worker: the test reports as one
    workers.start(cluster, env=offline_index(wheelhouse, tmp_path / "cache"))
    workspace = Workspace(url=stack.url)
    env = Environment(unique("regpkgs"))
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["tinypkg==1.0"])
    registered = env.register(workspace)
    built = registered.build(workspace, image_build_compute=cluster).wait_for_completion(False)
    assert built.status == "Succeeded", built.get_log()
    # Completed later, a run that names itself the same version but was built from others.
    other = submit(stack.url, write(tmp_path / "src", {"a.py": "print(1)\n"}), "a.py", idle)
    forged = {**BUILT, "name": registered.name, "version": registered.version}
    report_as_a_worker(stack, other.id, {**forged, "spec_hash": "f" * 32}, RunStatus.COMPLETED)
    assert stack.client().get_run(other.id, fresh=True)["status"] == "Completed"

    details = registered.get_image_details(workspace)

    spec_hash = stack.client().get_environment(registered.name)["spec_hash"]
    assert (details["runId"], details["specHash"]) == (built.run_id, spec_hash)
    assert details.packages == ["tinypkg==1.0"]
