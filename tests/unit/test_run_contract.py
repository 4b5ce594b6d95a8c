"""The run environment contract: what a worker hands a run and where its SDK looks for it,
spelled once in ``runyard.tracking.contract`` and read there by both sides."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from runyard.tracking import contract
from worker.executors import ExecutionRequest, Node, executor_named

ROOT = Path(__file__).resolve().parents[2]
# The names only the contract may spell: every RUNYARD_ variable it lists, and the channel
# file names that are not everyday words ("files" and "outputs" are, elsewhere).
NAMES = {
    value: name
    for name, value in vars(contract).items()
    if name.isupper() and (value.startswith("RUNYARD_") or "." in value)
}


def test_only_the_contract_spells_the_runs_variables_and_channel_files() -> None:
    spelled = []
    for package in ("runyard", "worker", "protocol", "store", "scheduler", "api"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "runyard/tracking/contract.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and node.value in NAMES:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    spelled.append(f"{where} {node.value!r} (contract.{NAMES[node.value]})")
    assert spelled == []


def test_a_script_the_worker_starts_logs_through_the_channel_it_was_given(
    tmp_path: Path,
) -> None:
    workdir, channel = tmp_path / "work", tmp_path / "tracking"
    workdir.mkdir()
    channel.mkdir()
    (workdir / "model.txt").write_text("weights")
    (workdir / "train.py").write_text(
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "run.log('loss', 0.5)\n"
        "run.upload_file('model.txt', 'model.txt')\n"
        "print(run.id, run.experiment.name, run.experiment.workspace.url)\n"
    )
    request = ExecutionRequest(
        run_id="run-7",
        script="train.py",
        arguments=[],
        environment={"python": {"interpreter_path": sys.executable}},
        working_dir=workdir,
        tracking_dir=channel,
        context_env={
            contract.RUN_ID: "run-7",
            contract.EXPERIMENT: "mnist",
            contract.URL: "http://runyard.example:8642",
        },
    )
    execution = executor_named("local", Node(worker_id="w1", executors=("local",))).start(request)
    output = "".join(execution.output())
    assert execution.wait() == 0, output
    execution.cleanup()

    assert "run-7 mnist http://runyard.example:8642" in output
    events = [json.loads(line) for line in (channel / contract.CHANNEL_FILE).read_text().split()]
    assert {"r": "run-7", "k": "m", "n": "loss", "v": 0.5} in [
        {k: e[k] for k in ("r", "k", "n", "v") if k in e} for e in events
    ]
    staged = next(e for e in events if e["k"] == "file")
    assert staged["n"] == "model.txt"
    assert (channel / contract.STAGING_DIR / staged["f"]).read_text() == "weights"


def _attempt_seen(tmp_path: Path, context_env: dict[str, str]) -> str:
    """What ``Run.get_context()`` says of its attempt, in a script started with these
    variables (none: outside Runyard)."""
    workdir, channel = tmp_path / "work", tmp_path / "tracking"
    workdir.mkdir()
    channel.mkdir()
    (workdir / "train.py").write_text(
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "print('seen', run.attempt, run.previous_attempt_preempted)\n"
    )
    request = ExecutionRequest(
        run_id="run-8",
        script="train.py",
        arguments=[],
        environment={"python": {"interpreter_path": sys.executable}},
        working_dir=workdir,
        tracking_dir=channel,
        context_env=context_env,
    )
    execution = executor_named("local", Node(worker_id="w1", executors=("local",))).start(request)
    output = "".join(execution.output())
    assert execution.wait() == 0, output
    execution.cleanup()
    return next(line for line in output.splitlines() if line.startswith("seen"))


def test_a_script_knows_its_attempt_and_whether_the_one_before_was_preempted(
    tmp_path: Path,
) -> None:
    seen = _attempt_seen(
        tmp_path,
        {
            contract.RUN_ID: "run-8",
            contract.EXPERIMENT: "mnist",
            contract.URL: "http://runyard.example:8642",
            contract.ATTEMPT: "3",
            contract.PREVIOUS_ATTEMPT_PREEMPTED: "1",
        },
    )
    assert seen == "seen 3 True"


def test_an_offline_run_is_on_its_first_attempt(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in (contract.RUN_ID, contract.TRACKING_DIR, contract.ATTEMPT):
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "offline"
    workdir.mkdir()
    (workdir / "train.py").write_text(
        "from runyard.core import Run\n"
        "run = Run.get_context()\n"
        "print('seen', run.attempt, run.previous_attempt_preempted)\n"
    )
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=workdir, capture_output=True, text=True, check=True
    )
    assert "seen 1 False" in done.stdout
