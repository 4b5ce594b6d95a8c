"""Teams from the outside: an admin makes teams, puts tokens in them and sets quotas (REST
and CLI); every run is charged to a team, as the submitter's token allows (REST, CLI, SDK);
bad input is a 4xx with a reason, or one line and an exit code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from runyard.core import Experiment, ScriptRunConfig, Workspace
from tests.support.runs import local_env, write
from tests.support.services import ADMIN_TOKEN, Stack, runyard, unique


def cli(stack: Stack, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["RUNYARD_URL"], env["RUNYARD_TOKEN"] = stack.url, token
    return subprocess.run(
        runyard(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok(stack: Stack, *args: str, token: str = ADMIN_TOKEN) -> str:
    result = cli(stack, *args, token=token)
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]


def http(stack: Stack, token: str = ADMIN_TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=f"{stack.url}/api/v1", headers=headers, timeout=30)


def team_name() -> str:
    return unique("team")


def make_member(stack: Stack) -> tuple[str, str, str]:
    """A member token: its name, id and secret."""
    name = unique("person")
    created = stack.client().create_token(name=name, role="member")
    return name, created["id"], created["token"]


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> str:
    """A cluster no worker serves: runs submitted to it stay queued."""
    name = unique("teams")
    stack.client().create_cluster(name, nodes=2)
    return name


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("teams-src"), {"train.py": "print('hi')\n"})


def sdk_submit(
    stack: Stack, token: str, folder: Path, cluster: str, **extension: Any
) -> dict[str, Any]:
    """Submit as a user writes it; the run record as the API shows it."""
    config = ScriptRunConfig(
        source_directory=folder,
        script="train.py",
        compute_target=cluster,
        environment=local_env(),
        **extension,
    )
    run = Experiment(Workspace(url=stack.url, token=token), "teams").submit(config)
    return stack.client().get_run(run.id)


def rest_submit(stack: Stack, token: str, spec: dict[str, Any]) -> httpx.Response:
    with http(stack, token) as api:
        return api.post("/runs", data={"spec": json.dumps(spec)})


def test_teams_members_and_the_team_a_run_is_charged_to(
    stack: Stack, cluster: str, folder: Path
) -> None:
    vision, nlp = team_name(), team_name()
    admin = stack.client()
    created = admin.create_team(vision, "computer vision")
    assert (created["name"], created["description"], created["members"]) == (
        vision,
        "computer vision",
        [],
    )
    admin.create_team(nlp)
    name, token_id, secret = make_member(stack)

    # Its first team is its default; the second (by name here) is not.
    assert admin.add_team_member(vision, token_id)["members"] == [name]
    assert admin.add_team_member(nlp, name)["members"] == [name]
    assert {t["name"] for t in admin.list_teams()} >= {vision, nlp}

    # Named nothing: the default team. Named a team it is in: that one. SDK as users write it.
    assert sdk_submit(stack, secret, folder, cluster)["team"] == vision
    charged = sdk_submit(stack, secret, folder, cluster, team=nlp, preemptible=False)
    assert (charged["team"], charged["preemptible"]) == (nlp, False)
    assert sdk_submit(stack, secret, folder, cluster)["preemptible"] is True

    # Making nlp its default changes what a run naming no team is charged to.
    admin.add_team_member(nlp, token_id, default=True)
    assert sdk_submit(stack, secret, folder, cluster)["team"] == nlp

    # Out of nlp: its default falls back to vision.
    assert admin.remove_team_member(nlp, token_id)["members"] == []
    assert sdk_submit(stack, secret, folder, cluster)["team"] == vision

    # Every change is in the audit log, by whom.
    actions = {e["action"] for e in admin.audit(limit=200) if e["target"] in (vision, nlp)}
    assert {"team.create", "team.member.add", "team.member.remove"} <= actions


def test_a_token_cannot_charge_a_team_it_is_not_in(
    stack: Stack, cluster: str, folder: Path
) -> None:
    admin = stack.client()
    mine, theirs = team_name(), team_name()
    admin.create_team(mine)
    admin.create_team(theirs)
    _, token_id, secret = make_member(stack)
    admin.add_team_member(mine, token_id)
    before = admin.count_runs(cluster=cluster)

    spec = {"experiment": "teams", "cluster": cluster, "script": "train.py", "team": theirs}
    files = {"snapshot": ("s.tar.gz", b"not read", "application/gzip")}
    with http(stack, secret) as api:
        refused = api.post("/runs", data={"spec": json.dumps(spec)}, files=files)
    assert refused.status_code == 403, refused.text
    assert f"is not in team '{theirs}'" in refused.json()["detail"]
    missing = rest_submit(stack, secret, {**spec, "team": "no-such-team"})
    assert missing.status_code == 404, missing.text
    assert "no team named 'no-such-team'" in missing.json()["detail"]
    assert admin.count_runs(cluster=cluster) == before, "nothing stored"

    # The CLI says so in one line; an admin may charge any team.
    result = cli(
        stack,
        "submit",
        str(folder),
        "-s",
        "train.py",
        "-c",
        cluster,
        "--team",
        theirs,
        token=secret,
    )
    one_line_error(result, 9, f"is not in team '{theirs}'")
    out = ok(
        stack,
        "submit",
        str(folder),
        "-s",
        "train.py",
        "-c",
        cluster,
        "--team",
        theirs,
        "--non-preemptible",
        "--json",
    )
    run = json.loads(out)
    assert (run["team"], run["preemptible"]) == (theirs, False)


def test_a_non_preemptible_run_that_could_never_start_is_refused_at_submit(
    stack: Stack, folder: Path
) -> None:
    """On a cluster with team quotas a non-preemptible run may use only its team's quota:
    charged to no team, or to a team with no quota there, it would wait forever. It is
    refused (nothing stored); a preemptible one, or one of a team with a quota, is not."""
    admin = stack.client()
    shared = unique("shared")
    admin.create_cluster(shared, nodes=2)
    owner, other = team_name(), team_name()
    admin.create_team(owner)
    admin.create_team(other)
    admin.set_team_quota(owner, shared, slots=1)
    spec = {"experiment": "teams", "cluster": shared, "script": "train.py"}

    for team, label in ((None, "runs of no team"), (other, f"team {other}")):
        named = {} if team is None else {"team": team}
        refused = rest_submit(stack, ADMIN_TOKEN, {**spec, **named, "preemptible": False})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"] == (
            f"cluster {shared} has team quotas and {label} has none there: a non-preemptible "
            "run may use only its team's quota, so it would never start (submit it "
            "preemptible, or charge it to a team with a quota)"
        )
    assert admin.count_runs(cluster=shared) == 0, "nothing stored"
    result = cli(stack, "submit", str(folder), "-s", "train.py", "-c", shared, "--non-preemptible")
    one_line_error(result, 2, "has team quotas and runs of no team has none there")

    assert sdk_submit(stack, ADMIN_TOKEN, folder, shared, team=owner, preemptible=False)
    assert sdk_submit(stack, ADMIN_TOKEN, folder, shared, preemptible=True)
    assert admin.count_runs(cluster=shared) == 2


def test_a_token_in_no_team_charges_none_and_children_inherit_their_parents_team(
    stack: Stack, cluster: str, folder: Path
) -> None:
    admin = stack.client()
    _, _, loner = make_member(stack)
    assert sdk_submit(stack, loner, folder, cluster)["team"] is None

    team = team_name()
    admin.create_team(team)
    parent = sdk_submit(stack, ADMIN_TOKEN, folder, cluster, team=team)
    # A child is charged to its parent's team, whoever submits it; naming another is refused.
    spec = {
        "experiment": "teams",
        "cluster": cluster,
        "script": "train.py",
        "snapshot_digest": parent["snapshot_digest"],
        "parent_run_id": parent["id"],
    }
    child = rest_submit(stack, loner, spec)
    assert child.status_code == 201, child.text
    assert child.json()["team"] == team
    other = team_name()
    admin.create_team(other)
    refused = rest_submit(stack, ADMIN_TOKEN, {**spec, "team": other})
    assert refused.status_code == 422, refused.text
    assert "charged to its parent's team" in refused.json()["detail"]

    # Job arrays: every run charged alike.
    array = {**spec, "team": team, "arguments_list": [["1"], ["2"]]}
    del array["parent_run_id"]
    with http(stack) as api:
        answer = api.post("/runs/array", data={"spec": json.dumps(array)})
    assert answer.status_code == 201, answer.text
    assert {admin.get_run(i)["team"] for i in answer.json()["run_ids"]} == {team}


def test_quotas_are_set_listed_and_cleared(stack: Stack, cluster: str) -> None:
    admin = stack.client()
    team = team_name()
    admin.create_team(team)
    quota = admin.set_team_quota(team, cluster, slots=2, borrowing_slots=1)
    assert (quota["cluster"], quota["team"], quota["slots"], quota["borrowing_slots"]) == (
        cluster,
        team,
        2,
        1,
    )
    assert quota["lending_slots"] is None  # not given: no limit
    assert any(q["team"] == team for q in admin.cluster_quotas(cluster))
    assert admin.get_team(team)["quotas"][0]["slots"] == 2

    # Set again: replaced as a whole.
    admin.set_team_quota(team, cluster, slots=3)
    assert admin.get_team(team)["quotas"][0]["borrowing_slots"] is None
    assert admin.clear_team_quota(team, cluster)["quotas"] == []
    assert all(q["team"] != team for q in admin.cluster_quotas(cluster))
    actions = {e["action"] for e in admin.audit(limit=100) if e["target"] == team}
    assert {"team.quota.set", "team.quota.clear"} <= actions


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "reason"),
    [
        ("POST", "/teams", {"name": "Bad Name"}, 422, "team names are 2-32 characters"),
        ("POST", "/teams", {"name": "ok-name", "extra": 1}, 422, "extra"),
        ("PUT", "/teams/{team}/quotas/no-such-cluster", {"slots": 1}, 404, "no cluster named"),
        ("PUT", "/teams/no-such-team/quotas/{cluster}", {"slots": 1}, 404, "no team named"),
        ("PUT", "/teams/{team}/quotas/{cluster}", {"slots": -1}, 422, "slots"),
        ("PUT", "/teams/{team}/quotas/{cluster}", {"slots": 1, "gpu": 2}, 422, "gpu"),
        ("DELETE", "/teams/{team}/quotas/{cluster}", None, 404, "has no quota on cluster"),
        ("PUT", "/teams/{team}/members/no-such-token", None, 404, "no live token"),
        ("DELETE", "/teams/{team}/members/no-such-token", None, 404, "no live token"),
        ("GET", "/teams/no-such-team", None, 404, "no team named"),
        ("GET", "/clusters/no-such-cluster/quotas", None, 404, "no cluster named"),
    ],
)
def test_bad_input_is_a_4xx_with_a_reason(
    stack: Stack,
    cluster: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    reason: str,
) -> None:
    team = team_name()
    stack.client().create_team(team)
    with http(stack) as api:
        answer = api.request(method, path.format(team=team, cluster=cluster), json=body)
    assert answer.status_code == status, answer.text
    assert reason in json.dumps(answer.json()), answer.text


def test_conflicts_and_permissions(stack: Stack, cluster: str, folder: Path) -> None:
    admin = stack.client()
    team = team_name()
    admin.create_team(team)
    with http(stack) as api:
        again = api.post("/teams", json={"name": team})
        assert again.status_code == 409 and "exists already" in again.json()["detail"]
        viewer = stack.client().create_token(name=unique("viewer"), role="viewer")
        refused = api.put(f"/teams/{team}/members/{viewer['id']}")
        assert refused.status_code == 422 and "only admin and member" in refused.json()["detail"]
        outsider, _, _ = make_member(stack)
        absent = api.delete(f"/teams/{team}/members/{outsider}")
        assert absent.status_code == 404 and "is not in team" in absent.json()["detail"]

    # Reading is for any person's token; changing is for admins.
    _, _, member = make_member(stack)
    with http(stack, member) as api:
        assert api.get(f"/teams/{team}").status_code == 200
        assert api.get(f"/clusters/{cluster}/quotas").status_code == 200
        forbidden = api.post("/teams", json={"name": team_name()})
        assert forbidden.status_code == 403 and "needs admin" in forbidden.json()["detail"]

    # A team with a queued run is not deleted; without, it is (and says what it was).
    sdk_submit(stack, ADMIN_TOKEN, folder, cluster, team=team)
    with http(stack) as api:
        busy = api.delete(f"/teams/{team}")
        assert busy.status_code == 409, busy.text
        assert "queued or active run" in busy.json()["detail"]
    admin.cancel_queued(cluster)
    assert admin.delete_team(team)["name"] == team
    assert team not in {t["name"] for t in admin.list_teams()}


def test_teams_from_the_command_line(stack: Stack, cluster: str) -> None:
    team = team_name()
    name, token_id, _ = make_member(stack)
    assert team in ok(stack, "team", "create", team, "--description", "speech")
    listed = json.loads(ok(stack, "team", "list", "--json"))
    assert any(t["name"] == team and t["description"] == "speech" for t in listed)
    assert name in ok(stack, "team", "add-member", team, token_id, "--default")
    quota = json.loads(
        ok(
            stack,
            "team",
            "quota",
            team,
            cluster,
            "--slots",
            "4",
            "--borrowing-limit",
            "2",
            "--lending-limit",
            "1",
            "--json",
        )
    )
    assert (quota["slots"], quota["borrowing_slots"], quota["lending_slots"]) == (4, 2, 1)
    shown = ok(stack, "team", "show", team)
    assert cluster in shown and name in shown
    assert f"{cluster}=4" in ok(stack, "team", "list")
    ok(stack, "team", "quota", team, cluster, "--clear")
    assert json.loads(ok(stack, "team", "show", team, "--json"))["quotas"] == []

    one_line_error(cli(stack, "team", "quota", team, cluster), 2, "give --slots")
    one_line_error(
        cli(stack, "team", "quota", team, "no-such-cluster", "--slots", "1"), 3, "no cluster named"
    )
    one_line_error(cli(stack, "team", "create", "Bad_Name"), 2, "team names are")
    one_line_error(cli(stack, "team", "create", team), 4, "exists already")
    one_line_error(cli(stack, "team", "show", "no-such-team"), 3, "no team named")
    bad = cli(stack, "team", "quota", team, cluster, "--slots", "-1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

    ok(stack, "team", "remove-member", team, name)
    assert "deleted team" in ok(stack, "team", "delete", team)
    for command in (["team"], ["team", "quota"], ["team", "add-member"]):
        assert "Usage:" in ok(stack, *command, "--help")


def test_team_scheduling_settings_of_a_cluster(stack: Stack, tmp_path: Path) -> None:
    name = unique("sched")
    settings = json.loads(
        ok(
            stack,
            "cluster",
            "create",
            name,
            "--priority-preemption",
            "--preemption-min-runtime",
            "30",
            "--fair-share-half-life",
            "24",
            "--priority-aging",
            "600",
            "--json",
        )
    )
    assert (
        settings["priority_preemption"],
        settings["preemption_min_runtime_seconds"],
        settings["fair_share_half_life_hours"],
        settings["priority_aging_seconds"],
    ) == (True, 30, 24, 600)
    changed = json.loads(ok(stack, "cluster", "update", name, "--no-priority-preemption", "--json"))
    assert changed["priority_preemption"] is False
    assert changed["fair_share_half_life_hours"] == 24
    one_line_error(
        cli(stack, "cluster", "update", name, "--fair-share-half-life", "0"),
        2,
        "fair_share_half_life_hours",
    )
