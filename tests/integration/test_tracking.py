"""The tracking context end to end: the Azure ML logging walkthrough for a submitted run
and an interactive one, a Ridge sweep, child runs, live events, and no point lost or
doubled when the ingest consumer, Redis or the worker restarts mid-run."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runyard.client import Client
from runyard.core import Experiment, Run, Workspace
from runyard.errors import InvalidInput
from tests.support.runs import submit, write
from tests.support.services import ADMIN, Stack, unique, wait_until

WALKTHROUGH = """
import math, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from runyard.core import Run

run = Run.get_context()
run.log("message", "Hello from run!")
run.log("answer", 42)
run.log("pi", 3.14159)
run.log("not a number", float("nan"))
run.log("infinity", float("inf"))
run.log_list("squares", (i * i for i in range(5)))
for step in range(10):
    run.log("loss", 1.0 / (step + 1))
for alpha in range(5):
    run.log_row("alpha vs mse", alpha=alpha / 10, mse=(alpha - 2) ** 2)
run.log_table("histogram", {"bucket": [1, 2, 3], "count": [10, 20, 5]})
plt.plot([1, 2, 3], [4, 1, 9])
run.log_image("sample plot", plot=plt)
open("weights.bin", "wb").write(b"0123456789")
run.upload_file(name="outputs/uploaded.bin", path_or_stream="weights.bin")
run.tag("smoke")
run.tag("team", "vision")
run.add_properties({"dataset": "v1"})
print("walkthrough logged", flush=True)
"""


def fetched(stack: Stack, run: Run) -> Run:
    """The run as another process sees it: Run(experiment, run_id)."""
    return Run(Experiment(Workspace(url=stack.url), run.experiment.name), run.id)


def check_walkthrough(stack: Stack, run: Run, tmp_path: Path) -> None:
    metrics = run.get_metrics()
    assert metrics["message"] == "Hello from run!"
    assert metrics["answer"] == 42 and isinstance(metrics["answer"], int)
    assert metrics["pi"] == 3.14159
    assert math.isnan(metrics["not a number"])
    assert metrics["infinity"] == math.inf
    assert metrics["squares"] == [0, 1, 4, 9, 16]
    assert metrics["loss"] == [1.0 / (s + 1) for s in range(10)]
    assert metrics["alpha vs mse"] == {"alpha": [0.0, 0.1, 0.2, 0.3, 0.4], "mse": [4, 1, 0, 1, 4]}
    assert metrics["histogram"] == {"bucket": [1, 2, 3], "count": [10, 20, 5]}
    image = metrics["sample plot"]
    assert isinstance(image, str) and image in run.get_file_names()
    run.download_file(image, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert run.get_metrics(name="loss") == {"loss": metrics["loss"]}
    assert run.get_tags() == {"smoke": None, "team": "vision"}  # valueless: None, as Azure
    assert run.get_properties() == {"dataset": "v1"}
    assert "outputs/uploaded.bin" in run.get_file_names()
    run.download_file("outputs/uploaded.bin", tmp_path / "uploaded.bin")
    assert (tmp_path / "uploaded.bin").read_bytes() == b"0123456789"


def test_the_azure_logging_walkthrough_in_a_submitted_run(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("track")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    run = submit(stack.url, write(tmp_path / "src", {"walk.py": WALKTHROUGH}), "walk.py", cluster)
    run.wait_for_completion()
    again = fetched(stack, run)
    check_walkthrough(stack, again, tmp_path)
    assert "walkthrough logged" in stack.client().logs(run.id)


def test_the_azure_logging_walkthrough_in_an_interactive_run(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    experiment = Experiment(Workspace(url=stack.url), "interactive")
    run = experiment.start_logging(display_name="notebook")
    assert run.get_status() == "Running"
    namespace: dict[str, object] = {}
    script = WALKTHROUGH.replace("run = Run.get_context()", "run = RUN")
    exec(compile(script, "walkthrough", "exec"), {"RUN": run, **namespace})
    run.complete()
    assert run.get_status() == "Completed"  # complete() returns once it is stored
    again = fetched(stack, run)
    check_walkthrough(stack, again, tmp_path)


def test_an_interactive_run_as_a_context_manager_fails_on_an_exception(stack: Stack) -> None:
    experiment = Experiment(Workspace(url=stack.url), "interactive")
    with pytest.raises(ZeroDivisionError), experiment.start_logging() as run:
        run.log("before", 1)
        raise ZeroDivisionError("boom")
    assert run.get_status() == "Failed"  # leaving the block returns once it is stored
    assert run.get_metrics(name="before") == {"before": 1}
    assert "ZeroDivisionError: boom" in stack.client().get_run(run.id)["failure_reason"]


RIDGE_LIB = """
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split


def data():
    X, y = load_diabetes(return_X_y=True)
    return train_test_split(X, y, test_size=0.2, random_state=0)


def fit(alpha, X_train, y_train, X_test, y_test):
    model = Ridge(alpha=alpha).fit(X_train, y_train)
    return model, mean_squared_error(y_test, model.predict(X_test))
"""

RIDGE_TRAIN = """
import os, pickle
import numpy as np
from mylib import data, fit
from runyard.core import Run

run = Run.get_context()
X_train, X_test, y_train, y_test = data()
os.makedirs("outputs", exist_ok=True)
for alpha in np.arange(0.0, 1.0, 0.05):
    model, mse = fit(alpha, X_train, y_train, X_test, y_test)
    run.log("alpha", float(alpha))
    run.log("mse", float(mse))
    with open(f"outputs/ridge_{alpha:.2f}.pkl", "wb") as f:
        pickle.dump(model, f)
    print(f"alpha={alpha:.2f} mse={mse:.1f}")
"""


def test_a_ridge_sweep_logs_alpha_and_mse_and_saves_each_model(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("ridge")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    folder = write(tmp_path / "src", {"mylib.py": RIDGE_LIB, "train.py": RIDGE_TRAIN})
    run = submit(stack.url, folder, "train.py", cluster, experiment="diabetes")
    run.wait_for_completion()
    again = fetched(stack, run)
    metrics = again.get_metrics()
    assert metrics["alpha"] == pytest.approx([i * 0.05 for i in range(20)])
    assert len(metrics["mse"]) == 20 and all(2000 < m < 5000 for m in metrics["mse"])
    models = [n for n in again.get_file_names() if n.startswith("outputs/ridge_")]
    assert len(models) == 20


def test_a_script_creates_five_children_and_logs_in_each(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("kids")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "children = run.create_children(5)\n"
        "for n, child in enumerate(children):\n"
        "    child.log('index', n)\n"
        "    child.log_list('series', [n, n + 1])\n"
        "    child.tag('child', str(n))\n"
        "    child.complete()\n"
        "run.log('parent', 1)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"kids.py": script}), "kids.py", cluster)
    run.wait_for_completion()
    again = fetched(stack, run)
    children = list(again.get_children())
    assert len(children) == 5
    assert all(c.get_status() == "Completed" for c in children)
    for n, child in enumerate(children):
        assert child.get_metrics() == {"index": n, "series": [n, n + 1]}
        assert child.get_tags() == {"child": str(n)}
        assert child.parent is not None and child.parent.id == run.id
    everything = again.get_metrics(recursive=True)
    assert set(everything) == {run.id, *(c.id for c in children)}
    assert everything[run.id] == {"parent": 1}


def test_outside_runyard_the_context_is_an_offline_run_that_prints(tmp_path: Path) -> None:
    import subprocess

    script = (
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "run.log('accuracy', 0.9)\n"
        "run.log_row('r', x=1, y=2)\n"
        "run.tag('t', 'v')\n"
        "print(run.id.startswith('OfflineRun_'), run.get_metrics())\n"
        "run.complete()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Attempted to log scalar metric accuracy:\n0.9" in result.stdout
    assert "True {}" in result.stdout


def test_bad_logging_calls_print_one_line_and_the_script_goes_on(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("limits")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    script = (
        "import os\n"
        "os.environ['RUNYARD_LIMIT_METRIC_NAMES'] = '3'\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "for name in ['a', 'b', 'c', 'd']:\n"
        "    run.log(name, 1)\n"
        "run.log('a', object())\n"
        "run.log_row('empty')\n"
        "run.add_properties({'p': 1})\n"
        "try:\n"
        "    run.add_properties({'p': 2})\n"  # raises, as Azure's does
        "except Exception as exc:\n"
        "    print(exc)\n"
        "print('still training')\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"lim.py": script}), "lim.py", cluster)
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    log = stack.client().logs(run.id)
    assert "distinct metric name number 4; the limit is 3" in log
    assert "cannot log a object" in log
    assert "properties cannot change" in log
    assert "still training" in log
    again = fetched(stack, run)
    assert set(again.get_metrics()) == {"a", "b", "c"}
    assert again.get_properties() == {"p": "1"}


def test_a_run_cannot_write_to_another_runs_record(stack: Stack, workers, tmp_path: Path) -> None:
    cluster = unique("forge")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    workers.start(cluster)
    victim = Experiment(Workspace(url=stack.url), "victims").start_logging()
    victim.log("clean", 1)
    victim.flush()
    script = (
        "import json, os, time\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "path = os.path.join(os.environ['RUNYARD_TRACKING_DIR'], 'events.jsonl')\n"
        f"forged = {{'r': {victim.id!r}, 'k': 'm', 'n': 'forged', 'v': 666, 't': time.time()}}\n"
        f"renamed = {{'r': {victim.id!r}, 'k': 'name', 'v': 'pwned', 't': time.time()}}\n"
        "with open(path, 'a') as f:\n"
        "    f.write(json.dumps(forged) + '\\n')\n"
        "    f.write(json.dumps(renamed) + '\\n')\n"
        f"print('broker' in str(os.environ), 'RUNYARD_REDIS_URL' in os.environ)\n"
        "run.log('own', 1)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"forge.py": script}), "forge.py", cluster)
    run.wait_for_completion()
    assert fetched(stack, run).get_metrics() == {"own": 1}
    assert "False False" in client.logs(run.id)  # no broker credentials in the run
    assert victim.get_metrics() == {"clean": 1}
    assert client.get_run(victim.id)["display_name"] != "pwned"
    # The API refuses the same forgery from an interactive client.
    with pytest.raises(InvalidInput, match=r"not .* or its child"):
        client.json(
            "POST",
            f"/runs/{run.id}/events",
            json={
                "producer": "p",
                "first_seq": 0,
                "events": [{"r": victim.id, "k": "m", "n": "forged", "v": 1}],
            },
        )
    victim.complete()


def test_live_events_carry_metrics_while_the_run_is_running(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("live")
    stack.client().create_cluster(cluster, nodes=1)
    workers.start(cluster)
    flag = tmp_path / "stop"
    script = (
        "import os, time\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "i = 0\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    run.log('tick', i); i += 1; time.sleep(0.05)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"live.py": script}), "live.py", cluster)
    seen: list[float] = []
    statuses: list[str] = []

    def listen() -> None:
        for event, data in Client(stack.url).events(run.id):
            if event == "metrics":
                seen.extend(e["v"] for e in data["events"] if e.get("n") == "tick")
            elif event == "status":
                statuses.append(data["status"])

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_until(lambda: len(seen) >= 10, 30, 0.05, what="live metric points")
    assert stack.client().get_run(run.id)["status"] == "Running"
    flag.touch()
    listener.join(30)
    assert not listener.is_alive()
    assert statuses[-1] == "Completed"
    assert seen == sorted(seen)


def test_points_survive_restarts_of_the_ingest_redis_and_the_worker_exactly_once(
    stack: Stack, workers, tmp_path: Path
) -> None:
    """Each component restarts once while a run logs steadily; afterwards every point is
    stored once. The worker restart kills that run (the local executor dies with its
    worker), so a second run covers the Redis and ingest restarts to its end."""
    client = stack.client()
    cluster = unique("chaos")
    client.create_cluster(cluster, nodes=1)
    name = unique("w")
    worker = workers.start(cluster, name=name)
    script = (
        "import sys, time\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "for i in range(int(sys.argv[1])):\n"
        "    run.log('step', i)\n"
        "    if i % 50 == 0: time.sleep(0.05)\n"
        "print('logged all', flush=True)\n"
    )
    folder = write(tmp_path / "src", {"steady.py": script})

    # 1. The worker is killed mid-run and comes back: what was logged is forwarded once.
    first = submit(stack.url, folder, "steady.py", cluster, "1000000")
    wait_until(lambda: _count(client, first.id, "step") > 500, 30, 0.1, what="points")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    workers.start(cluster, name=name)
    assert first.wait_for_completion(raise_on_error=False)["status"] == "Failed"
    values = fetched(stack, first).get_metrics(name="step")["step"]
    assert values == list(range(len(values)))  # no gap, no repeat

    # 2. The scheduler (ingest consumer) is killed, then Redis restarts, mid-run.
    total = 20_000
    second = submit(stack.url, folder, "steady.py", cluster, str(total))
    wait_until(lambda: _count(client, second.id, "step") > 1000, 30, 0.1, what="points")
    scheduler = next(p for p in stack.processes if "scheduler" in " ".join(map(str, p.args)))
    os.kill(scheduler.pid, signal.SIGKILL)
    scheduler.wait()
    stack.processes.remove(scheduler)
    stack.redis.stop()
    time.sleep(0.5)
    stack.redis.start()
    stack.start_scheduler()
    assert second.wait_for_completion()["status"] == "Completed"
    assert _count(client, second.id, "step") == total
    values = fetched(stack, second).get_metrics(name="step")["step"]
    assert values == list(range(total))


def _count(client: Client, run_id: str, name: str) -> int:
    names = client.json("GET", f"/runs/{run_id}/metric-names")["data"]
    return next((m["count"] for m in names if m["name"] == name), 0)


def test_the_history_of_a_long_series_is_downsampled_keeping_its_extremes(stack: Stack) -> None:
    experiment = Experiment(Workspace(url=stack.url), "history")
    run = experiment.start_logging()
    values = [math.sin(i / 1000) for i in range(50_000)]
    values[12_345] = 99.0
    values[40_000] = -99.0
    run.log_list("wave", values)
    run.complete()
    client = stack.client()
    assert _count(client, run.id, "wave") == 50_000  # complete() returns once it is stored
    whole = client.json(
        "GET", f"/runs/{run.id}/metrics/wave/history", params={"limit": 100, "offset": 12_300}
    )
    assert whole["downsampled"] is False and whole["count"] == 50_000
    assert whole["points"][45] == [12_345, 99.0]
    small = client.json("GET", f"/runs/{run.id}/metrics/wave/history", params={"max_points": 400})
    assert small["downsampled"] is True and len(small["points"]) <= 400
    ys = [y for _, y in small["points"]]
    assert max(ys) == 99.0 and min(ys) == -99.0
    assert small["points"][0] == [0, values[0]] and small["points"][-1] == [49_999, values[-1]]
    json.dumps(small)  # plain JSON (finite values)


def test_children_created_and_logged_in_one_batch_all_keep_their_metrics(stack: Stack) -> None:
    """One batch creates each child (an event of the parent) and then logs in it: the API
    splits it per run, and each child's part must be applied after the part creating it."""
    client = stack.client()
    parent = client.json("POST", "/runs/interactive", json={"experiment": "one-batch"})["id"]
    children = [f"{parent}_{n}" for n in range(1, 31)]
    events: list[dict[str, Any]] = []
    for n, child in enumerate(children):
        events.append({"r": parent, "k": "child", "c": child, "t": 1.0})
        events.append({"r": child, "k": "m", "n": "loss", "v": n, "t": 1.0})
    batch = {"producer": "tree", "first_seq": 0, "events": events, "wait": True}
    assert client.json("POST", f"/runs/{parent}/events", json=batch)["stored"] is True
    for n, child in enumerate(children):
        stored = client.json("GET", f"/runs/{child}/metrics")["runs"][child]
        assert [p[2] for p in stored["loss"]["points"]] == [n], child


def test_malformed_or_forged_channel_lines_are_dropped_without_blocking_anything(
    stack: Stack, workers, tmp_path: Path
) -> None:
    cluster = unique("junk")
    client = stack.client()
    client.create_cluster(cluster, nodes=1)
    workers.start(cluster)
    secret = tmp_path / "host-secret.txt"
    secret.write_text("worker host file")
    script = (
        "import json, os, time\n"
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "channel = os.environ['RUNYARD_TRACKING_DIR']\n"
        f"os.symlink({str(secret)!r}, os.path.join(channel, 'files', 'leak'))\n"
        "me = os.environ['RUNYARD_RUN_ID']\n"
        "bad = [{'r': me, 'k': 'prop', 'v': [1]}, {'r': me, 'k': 'm', 'n': 'x', 'v': 1,\n"
        "        't': 'now'}, {'r': me, 'k': []}, 'not a dict', {'r': me, 'k': 'file',\n"
        "        'n': 'outputs/leak.txt', 'f': 'leak'}]\n"
        "with open(os.path.join(channel, 'events.jsonl'), 'a') as f:\n"
        "    for b in bad:\n"
        "        f.write(json.dumps(b) + '\\n')\n"
        "    f.write('{not json\\n')\n"
        "run.log('good', 1)\n"
    )
    run = submit(stack.url, write(tmp_path / "src", {"junk.py": script}), "junk.py", cluster)
    run.wait_for_completion()
    again = fetched(stack, run)
    assert again.get_metrics() == {"good": 1}
    assert again.get_properties() == {}
    assert "outputs/leak.txt" not in again.get_file_names()  # the link was not followed
    # The ingest is not stuck: the next run's data still arrives.
    after = submit(
        stack.url,
        write(
            tmp_path / "src2",
            {"ok.py": ("from runyard.core import Run\nRun.get_context().log('after', 2)\n")},
        ),
        "ok.py",
        cluster,
    )
    after.wait_for_completion()
    assert fetched(stack, after).get_metrics() == {"after": 2}


def test_the_api_refuses_malformed_events_with_a_reason(stack: Stack) -> None:
    run = Experiment(Workspace(url=stack.url), "interactive").start_logging()
    client = stack.client()
    for event in (
        {"r": run.id, "k": []},
        {"r": run.id, "k": "prop", "v": [1]},
        {"r": run.id, "k": "m", "n": "x", "v": {"deep": 1}},
    ):
        with pytest.raises(InvalidInput, match="not a Runyard event"):
            client.json(
                "POST",
                f"/runs/{run.id}/events",
                json={"producer": "p", "first_seq": 0, "events": [event]},
            )
    with pytest.raises(InvalidInput, match="first_seq"):
        client.json(
            "POST",
            f"/runs/{run.id}/events",
            json={"producer": "p", "first_seq": 2**63, "events": []},
        )
    run.complete()


def test_a_batch_the_api_accepts_by_coercing_it_is_stored(stack: Stack) -> None:
    """``"first_seq": "5"`` is accepted (the model reads it as 5): what was accepted and
    said stored must be stored."""
    client = stack.client()
    run = client.json("POST", "/runs/interactive", json={"experiment": "coerced"})["id"]
    batch = {"producer": "p", "first_seq": "5", "wait": True,
             "events": [{"r": run, "k": "m", "n": "loss", "v": 0.5, "t": 1.0}]}  # fmt: skip
    assert client.json("POST", f"/runs/{run}/events", json=batch)["stored"] is True
    stored = client.json("GET", f"/runs/{run}/metrics")["runs"][run]
    assert [p[2] for p in stored["loss"]["points"]] == [0.5]


def browser_json(text: str) -> Any:
    """JSON as a browser parses it: a bare NaN or Infinity is an error."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in browser-facing JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_studio_tables_read_browser_safe_values_and_last_only_where_one_is(
    stack: Stack,
) -> None:
    """The experiment's run table and a run's metric list spell NaN and infinities as
    strings; a row or a table has no single latest value, so no ``last``. The metric
    reads, for Python, keep NaN as logged."""
    name = unique("safe")
    run = Experiment(Workspace(url=stack.url), name).start_logging()
    run.log("loss", float("nan"))
    run.log("gain", float("-inf"))
    run.log("step", 3)
    run.log_row("pair", a=1, b=2)
    run.log_table("grid", {"x": [1, 2]})
    run.tag("phase", "warmup")
    run.complete()  # returns once everything logged is stored
    with httpx.Client(base_url=f"{stack.url}/api/v1", headers=ADMIN) as http:
        names = browser_json(http.get(f"/runs/{run.id}/metric-names").text)
        table = browser_json(
            http.get(f"/experiments/{name}/runs", params={"metric": ["loss", "gain", "step"]}).text
        )
    assert names == {
        "data": [
            {"name": "gain", "kind": "scalar", "count": 1, "last": "-Infinity"},
            {"name": "grid", "kind": "table", "count": 2},
            {"name": "loss", "kind": "scalar", "count": 1, "last": "NaN"},
            {"name": "pair", "kind": "row", "count": 1},
            {"name": "step", "kind": "scalar", "count": 1, "last": 3},
        ],
        "count": 5,
    }
    (row,) = table["data"]
    assert (table["count"], table["metric_names"]) == (1, ["gain", "loss", "step"])
    assert (row["id"], row["status"], row["experiment"]) == (run.id, "Completed", name)
    assert row["tags"] == {"phase": "warmup"}
    assert row["metrics"] == {"loss": "NaN", "gain": "-Infinity", "step": 3}
    assert math.isnan(fetched(stack, run).get_metrics(name="loss")["loss"])
