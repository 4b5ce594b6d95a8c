"""Two teams sharing one cluster, with real workers: quotas hold, idle capacity is
borrowed, a team below its quota reclaims it by preempting a borrower (SIGTERM, grace,
requeue; the victim resumes from its checkpoint and completes), the minimum runtime and
non-preemptible runs are respected, fair share orders a burst, and usage accounting
matches the runs. Real Redis, API, scheduler and Celery worker processes.

Effects that happen later by design (a scheduler's decision, a run ending) are waited for;
``GUARD`` is a failure guard, never an expectation.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from runyard.core import Experiment, ScriptRunConfig, Workspace
from tests.support.runs import local_env, wait_for_status, write
from tests.support.services import ADMIN_TOKEN, RedisServer, Stack, unique, wait_until

GUARD = 60

# A training loop that checkpoints every step and stops cleanly on SIGTERM; it runs until
# the gate file exists, then writes its result. It prints what Run.get_context() says of
# its attempt, and the step it resumes from.
TRAINER = """\
import os, signal, sys, time
from runyard.core import Run

run = Run.get_context()
gate = sys.argv[1]
os.makedirs('checkpoints', exist_ok=True)
saved = os.path.join('checkpoints', 'step.txt')
step = int(open(saved).read()) if os.path.exists(saved) else 0
print(f'attempt {run.attempt} previous preempted {run.previous_attempt_preempted} '
      f'resumes at {step}', flush=True)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
while not os.path.exists(gate):
    if stopping:
        print(f'SIGTERM at step {step}; checkpoint saved', flush=True)
        sys.exit(0)
    step += 1
    open(saved, 'w').write(str(step))
    time.sleep(0.05)
os.makedirs('outputs', exist_ok=True)
open(os.path.join('outputs', 'result.txt'), 'w').write(f'{step} on attempt {run.attempt}')
print('trained to step', step, flush=True)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_service: RedisServer) -> Iterator[Stack]:
    live = Stack(root=tmp_path_factory.mktemp("stack"), redis=redis_service)
    live.start()
    try:
        yield live
    finally:
        live.stop()


class Admin:
    """Team set-up through the REST API, as an operator's script would do it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(
            base_url=f"{stack.url}/api/v1",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )

    def call(self, method: str, path: str, **kwargs: object) -> dict:
        reply = self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert reply.status_code < 300, reply.text
        return reply.json() if reply.content else {}

    def team(self, name: str, cluster: str, **quota: int | None) -> str:
        """A team with a quota on ``cluster`` and one member token; its secret."""
        self.call("POST", "/teams", json={"name": name})
        self.call("PUT", f"/teams/{name}/quotas/{cluster}", json=quota)
        token_name = unique(name)
        secret = self.stack.make_token("member", name=token_name)
        self.call("PUT", f"/teams/{name}/members/{token_name}", json={"default": True})
        return secret

    def cluster(self, **settings: object) -> str:
        name = unique("shared")
        self.stack.client().create_cluster(name, **settings)
        return name


@pytest.fixture
def admin(stack: Stack) -> Iterator[Admin]:
    admin = Admin(stack)
    try:
        yield admin
    finally:
        admin.http.close()


def submit(stack: Stack, token: str, folder: Path, cluster: str, *args: str, **extra: object):  # type: ignore[no-untyped-def]
    config = ScriptRunConfig(
        source_directory=folder,
        script="train.py",
        arguments=list(args),
        compute_target=cluster,
        environment=local_env(),
        **extra,
    )
    return Experiment(Workspace(url=stack.url, token=token), "teams").submit(config)


def reason_of(stack: Stack, run_id: str) -> str:
    return stack.client().get_run(run_id).get("pending_reason") or ""


def queued_reason(stack: Stack, cluster: str, run_id: str) -> str | None:
    for run in stack.client().cluster_runs(cluster, status="queued"):
        if run["id"] == run_id:
            return run.get("pending_reason")
    return None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write(tmp_path / "snapshot", {"train.py": TRAINER})


def test_a_team_reclaims_its_quota_and_the_preempted_run_resumes_from_its_checkpoint(
    stack: Stack, admin: Admin, folder: Path, tmp_path: Path
) -> None:
    cluster = admin.cluster(nodes=2, cancel_grace_seconds=10, preemption_min_runtime_seconds=0)
    vision = admin.team(unique("vision"), cluster, slots=1)
    nlp_name = unique("nlp")
    nlp = admin.team(nlp_name, cluster, slots=1)
    stack.start_worker(cluster, slots=2)
    gate, nlp_gate = tmp_path / "gate", tmp_path / "nlp-gate"

    first = submit(stack, vision, folder, cluster, str(gate))
    wait_for_status(stack, first.id, {"Running"}, GUARD)
    borrower = submit(stack, vision, folder, cluster, str(gate))  # nlp's idle slot
    wait_for_status(stack, borrower.id, {"Running"}, GUARD)

    owner = submit(stack, nlp, folder, cluster, str(nlp_gate))
    wait_for_status(stack, owner.id, {"Running"}, GUARD)  # reclaimed from the borrower
    taken = stack.client().get_run(borrower.id)
    assert taken["preemptions"] == 1
    assert taken["preempted_by"] == owner.id
    assert f"reclaimed by team {nlp_name}" in taken["preemption_reason"]
    assert stack.client().get_run(first.id)["preemptions"] == 0  # the older run stays

    # The borrower waits again while both slots are taken, then resumes in the freed one.
    nlp_gate.touch()
    wait_for_status(stack, owner.id, {"Completed"}, GUARD)
    wait_until(
        lambda: "resumes at" in stack.client().logs(borrower.id).split("SIGTERM")[-1],
        GUARD,
        0.1,
        what="the second attempt to start",
    )
    gate.touch()
    done = wait_for_status(stack, borrower.id, {"Completed"}, GUARD)
    wait_for_status(stack, first.id, {"Completed"}, GUARD)
    assert done["attempt"] == 2
    log = stack.client().logs(borrower.id)
    assert "SIGTERM at step" in log
    assert "Preempted" in log
    saved = int(log.split("SIGTERM at step ")[1].split(";")[0])
    assert saved > 0
    assert f"attempt 2 previous preempted True resumes at {saved}" in log
    assert "attempt 1 previous preempted False resumes at 0" in log
    stack.client().download_file(borrower.id, "outputs/result.txt", tmp_path / "result.txt")
    assert (tmp_path / "result.txt").read_text().endswith("on attempt 2")


def test_a_team_without_borrowing_waits_at_its_quota_while_a_slot_is_idle(
    stack: Stack, admin: Admin, folder: Path, tmp_path: Path
) -> None:
    cluster = admin.cluster(nodes=2)
    name = unique("vision")
    vision = admin.team(name, cluster, slots=1, borrowing_slots=0)
    stack.start_worker(cluster, slots=2)
    gate = tmp_path / "gate"
    running = submit(stack, vision, folder, cluster, str(gate))
    wait_for_status(stack, running.id, {"Running"}, GUARD)
    waiting = submit(stack, vision, folder, cluster, str(gate))
    reason = wait_until(
        lambda: (queued_reason(stack, cluster, waiting.id) or "").startswith(f"team {name}"),
        GUARD,
        0.1,
        what="the quota reason",
    )
    assert queued_reason(stack, cluster, waiting.id) == f"team {name} at quota (1/1 slots)"
    assert reason
    assert stack.client().get_run(waiting.id)["status"] == "Queued"
    gate.touch()
    wait_for_status(stack, waiting.id, {"Completed"}, GUARD)  # its turn came within quota


def test_non_preemptible_runs_stay_within_the_quota_and_are_never_preempted(
    stack: Stack, admin: Admin, folder: Path, tmp_path: Path
) -> None:
    cluster = admin.cluster(nodes=2, preemption_min_runtime_seconds=0)
    name = unique("vision")
    vision = admin.team(name, cluster, slots=1)
    nlp = admin.team(unique("nlp"), cluster, slots=1)
    stack.start_worker(cluster, slots=2)
    gate, nlp_gate = tmp_path / "gate", tmp_path / "nlp-gate"
    kept = submit(stack, vision, folder, cluster, str(gate), preemptible=False)
    wait_for_status(stack, kept.id, {"Running"}, GUARD)
    second = submit(stack, vision, folder, cluster, str(gate), preemptible=False)
    wait_until(
        lambda: "non-preemptible" in (queued_reason(stack, cluster, second.id) or ""),
        GUARD,
        0.1,
        what="the non-preemptible reason",
    )
    owner = submit(stack, nlp, folder, cluster, str(nlp_gate))  # nlp's own slot is idle
    wait_for_status(stack, owner.id, {"Running"}, GUARD)
    assert stack.client().get_run(kept.id)["preemptions"] == 0
    for path in (gate, nlp_gate):
        path.touch()
    for run in (kept, second, owner):
        wait_for_status(stack, run.id, {"Completed"}, GUARD)
    assert stack.client().get_run(kept.id)["attempt"] == 1


def test_a_borrower_is_not_preempted_before_its_minimum_runtime(
    stack: Stack, admin: Admin, folder: Path, tmp_path: Path
) -> None:
    cluster = admin.cluster(nodes=2, preemption_min_runtime_seconds=3600)
    vision_name = unique("vision")
    vision = admin.team(vision_name, cluster, slots=1)
    nlp = admin.team(unique("nlp"), cluster, slots=1)
    stack.start_worker(cluster, slots=2)
    gate = tmp_path / "gate"
    runs = []
    for _ in range(2):
        runs.append(submit(stack, vision, folder, cluster, str(gate)))
        wait_for_status(stack, runs[-1].id, {"Running"}, GUARD)
    owner = submit(stack, nlp, folder, cluster, str(gate))
    wait_until(
        lambda: "will reclaim" in (queued_reason(stack, cluster, owner.id) or ""),
        GUARD,
        0.1,
        what="the reclaim reason",
    )
    reason = queued_reason(stack, cluster, owner.id) or ""
    assert f"will reclaim 1 slot(s) from team {vision_name}" in reason
    # Neither has run its minimum: the one that reaches it first is the one named.
    assert f"preempting run {runs[0].id} in " in reason
    for run in runs:
        record = stack.client().get_run(run.id)
        assert record["status"] == "Running"
        assert record["preempt_requested_at"] is None
    gate.touch()
    for run in [*runs, owner]:
        wait_for_status(stack, run.id, {"Completed"}, GUARD)


def test_fair_share_starts_the_team_that_used_less_first_and_usage_matches_the_runs(
    stack: Stack, admin: Admin, folder: Path, tmp_path: Path
) -> None:
    cluster = admin.cluster(nodes=1)
    vision_name, nlp_name = unique("vision"), unique("nlp")
    vision = admin.team(vision_name, cluster, slots=1)
    nlp = admin.team(nlp_name, cluster, slots=1)
    stack.start_worker(cluster, slots=1)
    blocker_gate, gate = tmp_path / "blocker", tmp_path / "gate"
    blocker = submit(stack, vision, folder, cluster, str(blocker_gate))  # vision's usage
    wait_for_status(stack, blocker.id, {"Running"}, GUARD)
    gate.touch()  # the burst's runs end at once
    burst = [submit(stack, vision, folder, cluster, str(gate)) for _ in range(2)]
    burst += [submit(stack, nlp, folder, cluster, str(gate)) for _ in range(2)]
    blocker_gate.touch()
    for run in [blocker, *burst]:
        wait_for_status(stack, run.id, {"Completed"}, GUARD)
    records = [stack.client().get_run(run.id) for run in burst]
    order = sorted(records, key=lambda r: r["running_at"])
    assert order[0]["team"] == nlp_name  # submitted last, started first

    reply = admin.call("GET", "/usage", params={"since": "1d", "by": "team", "cluster": cluster})
    figures = {row["team"]: row["slot_seconds"] for row in reply["data"]}
    expected: dict[str, float] = {}
    for record in [stack.client().get_run(blocker.id), *records]:
        started = datetime.fromisoformat(record["preparing_at"])
        ended = datetime.fromisoformat(record["completed_at"])
        expected[record["team"]] = (
            expected.get(record["team"], 0.0) + (ended - started).total_seconds()
        )
    assert figures == pytest.approx(expected, abs=0.01)
