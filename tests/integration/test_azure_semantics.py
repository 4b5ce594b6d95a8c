"""Azure ML v1 semantics beyond the published documents: writes done when they return,
settings that are honoured or refused (never dropped), isolation that is never lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runyard.core import Environment, Experiment, Run, ScriptRunConfig, Workspace
from runyard.core.compute import ComputeTarget, ComputeTargetException
from runyard.core.runconfig import RunConfiguration
from runyard.errors import Forbidden, InvalidInput, NotSupported
from tests.support.runs import local_env, write
from tests.support.services import ADMIN, Stack, runyard, unique


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """start_logging makes ./outputs, as Azure's does: keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def workspace(stack: Stack) -> Workspace:
    return Workspace(url=stack.url)


def config(folder: Path, script: str, cluster: str | None, **kwargs: object) -> ScriptRunConfig:
    return ScriptRunConfig(
        source_directory=folder,
        script=script,
        compute_target=cluster,
        environment=kwargs.pop("environment", local_env()),
        **kwargs,  # type: ignore[arg-type]
    )


# --- writes are done when they return ---------------------------------------------------------


def test_a_hundred_thousand_points_are_all_read_back_after_complete(
    stack: Stack, in_tmp: Path
) -> None:
    """Seen: 100,000 log() calls, complete(), get_metrics() -> 25,000 values."""
    run = Experiment(workspace(stack), "many").start_logging()
    for i in range(100_000):
        run.log("x", i)
    run.complete()
    assert run.get_status() == "Completed"
    assert run.get_metrics(name="x")["x"] == list(range(100_000))


def test_writes_inside_a_submitted_run_are_visible_when_they_return(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """The script reads its own writes through the API, as Azure's scripts can."""
    cluster = unique("ryw")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "for i in range(5000):\n"
        "    run.log('x', i)\n"
        "run.tag('stage', 'trained')\n"
        "print('tags', run.get_tags())\n"
        "run.flush()\n"
        "print('points', len(run.get_metrics(name='x')['x']))\n"
        "open('model.bin', 'wb').write(b'weights')\n"
        "run.upload_file('model.bin', 'model.bin')\n"
        "print('files', run.get_file_names())\n"
        "run.add_properties({'dataset': 'v2'})\n"
        "print('properties', run.get_properties())\n"
    )
    folder = write(tmp_path / "src", {"ryw.py": script})
    run = Experiment(workspace(stack), "ryw").submit(config(folder, "ryw.py", cluster))
    run.wait_for_completion()
    log = stack.client().logs(run.id)
    assert "tags {'stage': 'trained'}" in log
    assert "points 5000" in log
    assert "files ['model.bin', 'user_logs/std_log.txt']" in log
    assert "properties {'dataset': 'v2'}" in log
    assert "could not confirm" not in log


def test_a_worker_that_stops_answering_never_hangs_the_script(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """The sync socket taken away by the script itself: its writes go on, with a note."""
    cluster = unique("nosock")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "import os\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "os.unlink(os.path.join(os.environ['RUNYARD_TRACKING_DIR'], 'sync.sock'))\n"
        "run.log('x', 1)\n"
        "run.tag('a', 'b')\n"
        "run.flush()\n"
        "print('went on')\n"
    )
    folder = write(tmp_path / "src", {"nosock.py": script})
    run = Experiment(workspace(stack), "ryw").submit(config(folder, "nosock.py", cluster))
    run.wait_for_completion()
    log = stack.client().logs(run.id)
    assert "went on" in log and "this worker does not confirm writes" in log
    assert run.get_metrics() == {"x": 1} and run.get_tags() == {"a": "b"}


# --- Azure settings: honoured or refused ---------------------------------------------------------


def test_run_config_always_exists_and_is_one_setting_with_the_config() -> None:
    src = ScriptRunConfig(source_directory=".", script="train.py")
    env = Environment("mine")
    src.run_config.environment = env
    assert src.environment is env
    src.compute_target = "gpu"
    assert src.run_config.target == "gpu"
    given = RunConfiguration(script="other.py", arguments=["--a", 1])
    given.max_run_duration_seconds = 60
    from_config = ScriptRunConfig(source_directory=".", run_config=given)
    assert (from_config.script, from_config.arguments) == ("other.py", ["--a", 1])
    assert from_config.max_run_duration_seconds == 60
    with pytest.raises(NotSupported, match="node_count=2"):
        given.node_count = 2
    with pytest.raises(AttributeError):
        given.amlcompute = object()  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        ScriptRunConfig(source_directory=".", script="t.py", not_an_option=1)  # type: ignore[call-arg]


def test_submit_tags_are_on_the_run_from_the_start(stack: Stack, tmp_path: Path) -> None:
    """Seen: ``submit(config, tags={"team": "nlp"})`` -> ``tags: {}``."""
    cluster = unique("tags")
    stack.client().create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "src", {"t.py": "print(1)\n"})
    run = Experiment(workspace(stack), "tags").submit(
        config(folder, "t.py", cluster), tags={"team": "nlp", "reviewed": None}
    )
    assert run.get_tags() == {"team": "nlp", "reviewed": None}
    (found,) = Experiment(workspace(stack), "tags").get_runs(tags={"team": "nlp"})
    assert found.id == run.id


def test_a_run_has_the_display_name_it_is_given_wherever_it_is_set(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """At submit, by the script itself (``run.display_name = ...`` as in Azure ML v1), and
    from a notebook holding the run: each is what the next read returns."""
    cluster = unique("names")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "run.display_name = 'lr 0.1 sweep'\n"
        "print('named', Run.get_context().display_name)\n"
    )
    folder = write(tmp_path / "src", {"name.py": script})
    experiment = Experiment(workspace(stack), "names")
    run = experiment.submit(config(folder, "name.py", cluster), display_name="baseline")
    assert Run(experiment, run.id).display_name == "baseline"
    run.wait_for_completion()
    assert "named lr 0.1 sweep" in stack.client().logs(run.id)
    assert Run(experiment, run.id).display_name == "lr 0.1 sweep"

    held = Run(experiment, run.id)
    held.display_name = "best of sweep"
    assert Run(experiment, run.id).display_name == "best of sweep"
    assert stack.client().get_run(run.id)["display_name"] == "best of sweep"
    with pytest.raises(InvalidInput, match="1 to 255 characters"):
        held.display_name = " "

    # Someone who may only read is refused, and nothing says the name changed.
    reader = Workspace(url=stack.url, token=stack.make_token("viewer"))
    watched = reader.get_run(run.id)
    with pytest.raises(Forbidden):
        watched.display_name = "mine now"
    assert watched.display_name == "best of sweep"
    assert Run(experiment, run.id).display_name == "best of sweep"


def test_a_submitted_child_outlives_its_parent_and_is_canceled_with_it(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """Seen: a parent that completed marked its submitted child Completed while the child
    still ran on its own worker. A submitted child ends with its own script; cancelling
    the parent cancels it."""
    cluster = unique("kids")
    stack.client().create_cluster(cluster, nodes=2)
    workers.start(cluster, slots=2)
    parent_script = (
        "import sys\n"
        "from runyard.core import Environment, Run, ScriptRunConfig\n"
        "env = Environment('here')\n"
        "env.python.user_managed_dependencies = True\n"
        "env.python.interpreter_path = sys.executable\n"
        "run = Run.get_context()\n"
        f"config = ScriptRunConfig('.', 'child.py', compute_target={cluster!r}, environment=env)\n"
        "run.submit_child(config)\n"
    )
    child_script = "import time\nprint('child up', flush=True)\nwhile True:\n    time.sleep(1)\n"
    folder = write(tmp_path / "src", {"parent.py": parent_script, "child.py": child_script})
    experiment = Experiment(workspace(stack), "kids")

    done = experiment.submit(config(folder, "parent.py", cluster))
    assert done.wait_for_completion()["status"] == "Completed"
    (child,) = done.get_children()
    assert child.get_status() not in ("Completed", "Failed", "Canceled")
    child.cancel()
    assert child.wait_for_completion(raise_on_error=False)["status"] == "Canceled"

    holding = parent_script + "print('child submitted', flush=True)\n" + child_script
    held_folder = write(tmp_path / "held", {"p.py": holding, "child.py": child_script})

    def parent_holding_its_child() -> tuple[Run, Run]:
        parent = experiment.submit(config(held_folder, "p.py", cluster))
        # submit_child returns once the child is stored: the parent's log says when.
        log = ""
        for text in stack.client().follow_logs(parent.id):
            log += text
            if "child submitted" in log:
                break
        (child,) = parent.get_children()
        return parent, child

    parent, child = parent_holding_its_child()
    parent.cancel()
    assert parent.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
    assert child.wait_for_completion(raise_on_error=False)["status"] == "Canceled"

    parent, child = parent_holding_its_child()
    parent.fail()  # from outside: it ends Failed now, and its child is stopped
    assert parent.get_status() == "Failed"
    assert child.wait_for_completion(raise_on_error=False)["status"] == "Canceled"

    parent, child = parent_holding_its_child()  # `runyard cancel PARENT CHILD`
    results = stack.client().cancel_many([parent.id, child.id])
    assert [r["error"] for r in results] == [None, None]
    assert child.wait_for_completion(raise_on_error=False)["status"] == "Canceled"


def test_a_run_past_its_max_duration_is_stopped_and_failed(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """Seen: ``max_run_duration_seconds=1`` -> the script ran its full length."""
    cluster = unique("limit")
    stack.client().create_cluster(cluster, nodes=1, cancel_grace_seconds=1)
    workers.start(cluster)
    slow = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    folder = write(tmp_path / "src", {"slow.py": slow})
    run = Experiment(workspace(stack), "limit").submit(
        config(folder, "slow.py", cluster, max_run_duration_seconds=1)
    )
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["message"] == (
        "ran longer than max_run_duration_seconds (1 s); stopped"
    )
    assert "started" in stack.client().logs(run.id)


def test_settings_runyard_cannot_honour_are_refused_by_name(stack: Stack, tmp_path: Path) -> None:
    folder = write(tmp_path / "src", {"t.py": "print(1)\n"})
    experiment = Experiment(workspace(stack), "refused")
    conda = Environment("conda")
    conda.python.conda_dependencies = object()
    with pytest.raises(NotSupported, match=r"python\.conda_dependencies"):
        experiment.submit(config(folder, "t.py", "any", environment=conda))
    arguments = Environment("args")
    arguments.docker.arguments = ["--privileged"]
    with pytest.raises(NotSupported, match=r"docker\.arguments"):
        experiment.submit(config(folder, "t.py", "any", environment=arguments))
    with pytest.raises(NotSupported, match="only tags"):
        experiment.submit(config(folder, "t.py", "any"), properties={"a": "b"})
    run = experiment.start_logging()
    with pytest.raises(NotSupported, match="no model registry"):
        run.register_model("m", "outputs/model.pkl")
    with pytest.raises(NotSupported, match="run type"):
        list(experiment.get_runs(type="azureml.scriptrun"))
    run.complete()


def test_a_metric_logged_with_a_step_is_stored_at_that_step(stack: Stack, in_tmp: Path) -> None:
    """Seen: steps 5, 10, 100 stored at 0, 1, 2."""
    run = Experiment(workspace(stack), "steps").start_logging()
    for step, value in ((5, 0.9), (10, 0.5), (100, 0.1)):
        run.log("val_loss", value, step=step)
    run.log("val_loss", 0.05)  # no step: after the last one
    run.log("bad", 1, step=-1)  # refused with a line, like any bad call
    run.complete()
    history = stack.client().json("GET", f"/runs/{run.id}/metrics/val_loss/history")
    assert history["points"] == [[5, 0.9], [10, 0.5], [100, 0.1], [101, 0.05]]
    assert run.get_metrics() == {"val_loss": [0.9, 0.5, 0.1, 0.05]}
    names = stack.client().json("GET", f"/runs/{run.id}/metric-names")["data"]
    assert names == [{"name": "val_loss", "kind": "scalar", "count": 4, "last": 0.05}]


def test_workspace_get_run_and_compute_targets(stack: Stack, in_tmp: Path) -> None:
    ws = workspace(stack)
    run = Experiment(ws, "lookup").start_logging()
    found = ws.get_run(run.id)
    assert (found.id, found.experiment.name) == (run.id, "lookup")
    run.complete()
    name = unique("target")
    stack.client().create_cluster(name, nodes=3)
    target = ComputeTarget(workspace=ws, name=name)
    assert (target.name, target.max_nodes) == (name, 3)
    assert isinstance(ws.compute_targets[name], ComputeTarget)
    with pytest.raises(ComputeTargetException, match="not found"):
        ComputeTarget(workspace=ws, name="no-such-cluster")


# --- the default cluster ------------------------------------------------------------------------


def test_no_compute_target_goes_to_the_default_cluster_or_fails_naming_the_choices(
    stack: Stack, tmp_path: Path
) -> None:
    folder = write(tmp_path / "src", {"t.py": "print(1)\n"})
    experiment = Experiment(workspace(stack), "default")
    first, second = unique("first"), unique("second")
    client = stack.client()
    client.create_cluster(first, nodes=1)
    with pytest.raises(InvalidInput, match="no compute target and no default cluster") as refused:
        experiment.submit(config(folder, "t.py", None))
    assert first in refused.value.message and "runyard cluster update NAME --default" in (
        refused.value.message
    )
    cli = subprocess.run(
        runyard("submit", str(folder), "--script", "t.py"),
        capture_output=True,
        text=True,
        env={**stack.env},
        check=False,
    )
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    client.create_cluster(second, nodes=1, is_default=True)
    assert experiment.submit(config(folder, "t.py", None)).get_details()["target"] == second
    done = subprocess.run(
        runyard("cluster", "update", first, "--default"),
        capture_output=True,
        text=True,
        env={**stack.env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [c["name"] for c in client.list_clusters() if c["is_default"]] == [first]
    local = config(folder, "t.py", "local")  # Azure's "local": the default cluster
    assert experiment.submit(local).get_details()["target"] == first
    client.update_cluster(first, is_default=False)


# --- isolation is never dropped -----------------------------------------------------------------


def docker_asking(image: str) -> Environment:
    env = Environment("wants-a-container")
    env.docker.enabled = True
    env.docker.base_image = image
    env.python.user_managed_dependencies = True
    return env


def test_a_run_asking_for_docker_is_refused_by_a_cluster_of_host_processes(
    stack: Stack, tmp_path: Path
) -> None:
    """Seen: it ran on the worker's host, as root."""
    cluster = unique("hosts")
    stack.client().create_cluster(cluster, nodes=1)
    folder = write(tmp_path / "src", {"t.py": "print(1)\n"})
    with pytest.raises(NotSupported, match="runs scripts as processes on its hosts"):
        Experiment(workspace(stack), "iso").submit(
            config(folder, "t.py", cluster, environment=docker_asking("any:1"))
        )
    spec = {
        "experiment": "iso",
        "cluster": cluster,
        "script": "t.py",
        "environment": {"docker": {"enabled": True}},
        "snapshot_digest": "sha256:" + "0" * 64,
    }
    response = httpx.post(
        f"{stack.url}/api/v1/runs", data={"spec": json.dumps(spec)}, headers=ADMIN, timeout=30
    )
    assert response.status_code == 400, response.text
    assert "runs scripts as processes on its hosts" in response.json()["detail"]
    # The CLI, on a cluster whose default environment names an image: exit 2, one line.
    stack.client().update_cluster(cluster, environment={"docker": {"base_image": "img:1"}})
    cli = subprocess.run(
        runyard("submit", str(folder), "--script", "t.py", "--cluster", cluster),
        capture_output=True,
        text=True,
        env={**stack.env},
        check=False,
    )
    assert cli.returncode == 2, cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
    assert "runs scripts as processes on its hosts" in cli.stderr
    assert stack.client().cluster_runs(cluster) == []


def test_a_cluster_that_allows_container_runs_runs_them_in_containers(
    stack: Stack, workers, tmp_path: Path, run_image: str
) -> None:
    cluster = unique("mixed")
    stack.client().create_cluster(
        cluster, nodes=1, container_runs=True, container={"memory_mib": 256}
    )
    workers.start(cluster)
    probe = "import os\nprint('uid', os.getuid(), os.path.exists('/.dockerenv'))\n"
    folder = write(tmp_path / "src", {"probe.py": probe})
    run = Experiment(workspace(stack), "iso").submit(
        config(folder, "probe.py", cluster, environment=docker_asking(run_image))
    )
    run.wait_for_completion()
    assert "uid 1000 True" in stack.client().logs(run.id)


def test_a_missing_interpreter_fails_the_run_in_preparing_with_the_fix(
    stack: Stack, workers, tmp_path: Path, run_image: str
) -> None:
    """Seen: "script exited with code 127" for an image with python3 but no python."""
    cluster = unique("interp")
    stack.client().create_cluster(
        cluster, nodes=1, executor="docker", container={"image": run_image, "memory_mib": 256}
    )
    workers.start(cluster)
    folder = write(tmp_path / "src", {"t.py": "import sys\nprint('ran', sys.executable)\n"})
    experiment = Experiment(workspace(stack), "interp")
    plain = Environment("image-python")  # no interpreter named: python3, then python
    run = experiment.submit(config(folder, "t.py", cluster, environment=plain))
    run.wait_for_completion()
    assert "ran /usr/bin/python3" in stack.client().logs(run.id)
    named = Environment("named")
    named.python.interpreter_path = "python"
    failed = experiment.submit(config(folder, "t.py", cluster, environment=named))
    details = failed.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["message"] == (
        f"interpreter 'python' not found in image {run_image}; set "
        "environment.python.interpreter_path"
    )
    record = stack.client().get_run(failed.id)
    assert record["preparing_at"] is not None and record["starting_at"] is None


def test_a_user_managed_python_on_a_host_is_the_workers_own_unless_named(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """Seen: "python" first on PATH ran, which had no runyard (ModuleNotFoundError)."""
    cluster = unique("ownpy")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    folder = write(
        tmp_path / "src",
        {"t.py": "import sys\nfrom runyard.core import Run\nprint('ran', sys.executable)\n"},
    )
    experiment = Experiment(workspace(stack), "ownpy")
    own = Environment("user-managed")
    own.python.user_managed_dependencies = True
    run = experiment.submit(config(folder, "t.py", cluster, environment=own))
    run.wait_for_completion()
    assert f"ran {sys.executable}" in stack.client().logs(run.id)
    missing = Environment("missing")
    missing.python.user_managed_dependencies = True
    missing.python.interpreter_path = "/no/such/python"
    failed = experiment.submit(config(folder, "t.py", cluster, environment=missing))
    details = failed.wait_for_completion(raise_on_error=False)
    assert details["error"]["message"] == (
        "interpreter '/no/such/python' not found on this worker; set "
        "environment.python.interpreter_path"
    )
    assert stack.client().get_run(failed.id)["starting_at"] is None


def test_a_run_flooding_its_sync_socket_harms_only_itself(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """Held connections, a line without end, garbage: the worker goes on serving runs."""
    cluster = unique("flood")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    attack = (
        "import os, socket\n"
        "from runyard.core import Run\n"
        "path = os.path.join(os.environ['RUNYARD_TRACKING_DIR'], 'sync.sock')\n"
        "held = []\n"
        "for i in range(200):\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    s.settimeout(5)\n"
        "    try:\n"
        "        s.connect(path)\n"
        "        s.sendall(b'x' * (1 << 20) if i == 0 else b'never-answered-%d\\n' % i)\n"
        "    except OSError:\n"
        "        pass\n"
        "    held.append(s)\n"
        "run = Run.get_context()\n"
        "run.log('x', 1)\n"
        "run.flush()\n"
        "print('attack done')\n"
    )
    honest = "from runyard.core import Run\nRun.get_context().tag('ok')\nprint('honest')\n"
    folder = write(tmp_path / "src", {"attack.py": attack, "honest.py": honest})
    experiment = Experiment(workspace(stack), "flood")
    bad = experiment.submit(config(folder, "attack.py", cluster))
    assert bad.wait_for_completion()["status"] == "Completed"
    assert bad.get_metrics() == {"x": 1}
    good = experiment.submit(config(folder, "honest.py", cluster))
    good.wait_for_completion()
    log = stack.client().logs(good.id)
    assert "honest" in log and "could not confirm" not in log
    assert good.get_tags() == {"ok": None}
    assert httpx.get(f"{stack.url}/readyz", headers=ADMIN, timeout=10).status_code == 200
