"""``runyard.Client``: every resource is a named call whose path is a route the API serves,
and no caller (SDK, CLI, widget, worker, bench) builds an API path by hand."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from runyard.client import Client

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = {"runs", "experiments", "clusters", "snapshots", "tokens", "workers", "whoami"}
ENDPOINTS |= {"audit", "healthz", "readyz", "environments", "environment-builds", "usage"}


class Called(Exception):
    """Raised by the recording client once a call has said where it goes."""


class Recording(Client):
    """Where each call would go, without a network: the transport's one way out records."""

    def __init__(self) -> None:
        super().__init__("http://runyard.test", token="ryt_test")
        self.calls: list[tuple[str, str]] = []

    @contextmanager
    def _open(self, method: str, path: str, *_: Any) -> Iterator[Any]:
        self.calls.append((method, path))
        raise Called
        yield  # a generator, as the real one


CALLS = {
    "health": lambda c: c.health(),
    "whoami": lambda c: c.whoami(),
    "audit": lambda c: c.audit(actor="ann"),
    "usage": lambda c: c.usage(since="7d", by=["team", "day"], cluster="gpu"),
    "create_cluster": lambda c: c.create_cluster("gpu"),
    "list_clusters": lambda c: c.list_clusters(),
    "get_cluster": lambda c: c.get_cluster("gpu"),
    "update_cluster": lambda c: c.update_cluster("gpu", max_nodes=2),
    "delete_cluster": lambda c: c.delete_cluster("gpu"),
    "cluster_runs": lambda c: c.cluster_runs("gpu"),
    "cancel_queued": lambda c: c.cancel_queued("gpu"),
    "list_workers": lambda c: c.list_workers(),
    "drain_worker": lambda c: c.drain_worker("w-1"),
    "run_token": lambda c: c.run_token("r1", 1),
    "create_token": lambda c: c.create_token(name="ci"),
    "list_tokens": lambda c: c.list_tokens(),
    "tokens_page": lambda c: c.tokens_page(limit=10, cursor="abc"),
    "revoke_token": lambda c: c.revoke_token("t1"),
    "list_experiments": lambda c: c.list_experiments(),
    "register_environment": lambda c: c.register_environment("train", {"name": "train"}),
    "get_environment": lambda c: c.get_environment("train", version=2),
    "list_environments": lambda c: c.list_environments(),
    "environments_page": lambda c: c.environments_page(limit=10, cursor="abc"),
    "environment_versions": lambda c: c.environment_versions("train"),
    "has_snapshot": lambda c: c.has_snapshot("sha256:ab"),
    "submit": lambda c: c.submit({"script": "train.py"}),
    "submit_array": lambda c: c.submit_array({"script": "train.py", "arguments_list": [[]]}),
    "start_interactive": lambda c: c.start_interactive("mnist"),
    "get_run": lambda c: c.get_run("r1", fresh=True),
    "list_runs": lambda c: c.list_runs(experiment="mnist"),
    "count_runs": lambda c: c.count_runs(status="Queued"),
    "iter_runs": lambda c: next(c.iter_runs()),
    "runs_page": lambda c: c.runs_page(cluster="gpu", cursor="abc"),
    "page": lambda c: c.page("/experiments", limit=10),
    "pages": lambda c: next(c.pages("/clusters/gpu/history")),
    "cluster_runs_page": lambda c: c.cluster_runs_page("gpu", "queued", 100, "abc"),
    "build_environment": lambda c: c.build_environment({"name": "sk"}, "cpu"),
    "latest_environment_build": lambda c: c.latest_environment_build("sk", "2"),
    "cancel": lambda c: c.cancel("r1"),
    "fail": lambda c: c.fail("r1", "bad data"),
    "cancel_many": lambda c: c.cancel_many(["r1"]),
    "send_events": lambda c: c.send_events("r1", {"producer": "p", "events": []}),
    "get_tags": lambda c: c.get_tags("r1"),
    "get_properties": lambda c: c.get_properties("r1"),
    "get_metrics": lambda c: c.get_metrics("r1", recursive=True),
    "metric_names": lambda c: c.metric_names("r1"),
    "logs": lambda c: c.logs("r1"),
    "follow_logs": lambda c: next(c.follow_logs("r1")),
    "events": lambda c: next(c.events("r1")),
    "download_snapshot": lambda c: c.download_snapshot("sha256:ab", Path("/nonexistent/s")),
    "download_run_snapshot": lambda c: c.download_run_snapshot("r1", Path("/nonexistent/s")),
    "upload_file": lambda c: c.upload_file("r1", "outputs/model.pt", b"weights"),
    "list_files": lambda c: c.list_files("r1"),
    "download_file": lambda c: c.download_file("r1", "outputs/m.pt", Path("/nonexistent/m")),
}


@functools.cache
def served_routes() -> list[tuple[str, re.Pattern[str]]]:
    """(METHOD, path pattern) of every route in the API's OpenAPI document; a parameter
    that ends a path may hold slashes (a file's folders)."""
    routes = []
    for path, operations in create_app().openapi()["paths"].items():
        pattern = re.sub(r"\{[^}]+\}$", ".+", path)
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
        routes += [(method.upper(), re.compile(pattern + "$")) for method in operations]
    return routes


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_client_call_names_a_route_the_api_serves(name: str) -> None:
    client = Recording()
    with pytest.raises(Called):
        CALLS[name](client)
    [(method, path)] = client.calls
    served = [(m, p.pattern) for m, p in served_routes() if m == method and p.match(path)]
    assert served, f"{name}: {method} {path} is no route of the API"


def test_every_public_call_of_the_client_is_checked_above() -> None:
    named = {n for n in vars(Client) if not n.startswith("_") and callable(getattr(Client, n))}
    assert named == set(CALLS)


def test_no_caller_builds_an_api_path_by_hand() -> None:
    """A string (or f-string) starting with an API route's first segment is a path built by
    hand: only ``runyard/api_paths.py`` may hold them."""
    starts = re.compile(rf"^/({'|'.join(ENDPOINTS)})(/|$)")
    found = []
    for package in ("runyard", "worker", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "runyard/api_paths.py":
                continue
            nodes = list(ast.walk(ast.parse(path.read_text(), str(path))))
            # An f-string counts from its start only: f"{studio}/runs/{id}" is a page of the
            # Studio, not a path of the API.
            pieces = {id(v) for n in nodes if isinstance(n, ast.JoinedStr) for v in n.values}
            for node in nodes:
                if isinstance(node, ast.JoinedStr) and node.values:
                    node = node.values[0]
                elif id(node) in pieces:
                    continue
                text = node.value if isinstance(node, ast.Constant) else None
                if isinstance(text, str) and starts.match(text):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {text!r}")
    assert found == []
