"""``Client``: the Runyard API's resources as named calls, for the SDK, the CLI and workers.

Every path comes from ``runyard.api_paths`` and every request goes through
``runyard.transport``: no caller builds a URL by hand. Standard library only, Python 3.9
syntax: a run's own SDK uses it inside any run image.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple, Union

from runyard import api_paths as paths
from runyard.errors import RunyardError

# The transport's names, importable from here as before.
from runyard.transport import (  # noqa: F401
    API,
    Body,
    Response,
    Transport,
    dumps,
    encode_multipart,
    error_from,
    loads,
)


class Client(Transport):
    """One call per thing the API does, each named for it; ``json``/``request`` below them
    (the transport) stay public for the few callers that replay a planned read."""

    # --- the service ------------------------------------------------------------------------

    def health(self, timeout: Optional[float] = None) -> Response:
        """The load balancer's probe (outside ``/api/v1``): answers once the API is up."""
        return self.request("GET", paths.HEALTH, api=False, timeout=timeout)

    def whoami(self) -> Dict[str, Any]:
        return self.json("GET", paths.WHOAMI)

    def audit(self, **filters: Any) -> List[Dict[str, Any]]:
        return self.json("GET", paths.AUDIT, params=filters)["data"]

    def usage(
        self,
        since: str = "30d",
        until: Optional[str] = None,
        by: Optional[List[str]] = None,
        **filters: Optional[str],
    ) -> Dict[str, Any]:
        """Slot- and GPU-hours of the runs' attempts per group of ``by`` (team, user,
        cluster, day; none: team) within ``since``..``until`` (an age such as ``30d``, a
        date, or a date and time); ``cluster``, ``team``, ``user`` narrow it."""
        params: Dict[str, Any] = {"since": since, "until": until, **filters}
        if by is not None:
            params["by"] = ",".join(by)
        return self.json(
            "GET", paths.USAGE, params={k: v for k, v in params.items() if v is not None}
        )

    # --- pages ------------------------------------------------------------------------------

    def page(self, path: str, **params: Any) -> Dict[str, Any]:
        """One page of a list: ``data``, ``count`` (None where a total needs a scan) and
        ``next_cursor`` (None on the last page), for ``cursor=`` of the next call."""
        return self.json("GET", path, params={k: v for k, v in params.items() if v is not None})

    def pages(
        self, path: str, page: Optional[int] = None, **params: Any
    ) -> Iterator[Dict[str, Any]]:
        """Every row of a list, reading a page (``page`` rows; None: the service's default)
        only when the one before is used up."""
        cursor = params.pop("cursor", None)
        while True:
            found = self.page(path, limit=page, cursor=cursor, **params)
            yield from found["data"]
            cursor = found.get("next_cursor")
            if not cursor or not found["data"]:
                return

    # --- clusters and workers ---------------------------------------------------------------

    def create_cluster(self, name: str, **settings: Any) -> Dict[str, Any]:
        return self.json("POST", paths.CLUSTERS, json={"name": name, **settings})

    def list_clusters(self) -> List[Dict[str, Any]]:
        """Every cluster (page after page)."""
        return list(self.pages(paths.CLUSTERS))

    def get_cluster(self, name: str) -> Dict[str, Any]:
        return self.json("GET", paths.cluster(name))

    def update_cluster(self, name: str, **changes: Any) -> Dict[str, Any]:
        return self.json("PATCH", paths.cluster(name), json=changes)

    def delete_cluster(self, name: str, force: bool = False) -> Dict[str, Any]:
        return self.json("DELETE", paths.cluster(name), params={"force": force})

    def cluster_runs(
        self, name: str, status: str = "all", limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """The cluster's runs in queue order (queued, then active): every one, or the first
        ``limit``; a page at a time either way."""
        found = self.pages(
            paths.cluster_runs(name), page=min(limit, 500) if limit else 500, status=status
        )
        return list(islice(found, limit)) if limit else list(found)

    def cluster_runs_page(
        self,
        name: str,
        status: str = "all",
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> Dict[str, Any]:
        """One page of the cluster's runs, with ``count`` and ``next_cursor``."""
        return self.page(paths.cluster_runs(name), status=status, limit=limit, cursor=cursor)

    def cancel_queued(self, name: str) -> List[Dict[str, Any]]:
        return self.json("POST", paths.cluster_cancel_queued(name))["data"]

    def list_workers(self) -> List[Dict[str, Any]]:
        """Every live worker (page after page)."""
        return list(self.pages(paths.WORKERS))

    def drain_worker(self, worker_id: str) -> Dict[str, Any]:
        """The worker finishes its runs and takes no new ones."""
        return self.json("POST", paths.worker_drain(worker_id))

    # --- tokens -----------------------------------------------------------------------------

    def run_token(self, run_id: str, attempt: int) -> str:
        """Workers: the token the run itself gets (its own tree, while this attempt runs)."""
        return self.json("POST", paths.run_token(run_id), json={"attempt": attempt})["token"]

    def create_token(self, **spec: Any) -> Dict[str, Any]:
        return self.json("POST", paths.TOKENS, json=spec)

    def list_tokens(
        self, include_revoked: bool = False, page: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """Every token, oldest first, read ``page`` at a time (``tokens_page`` for one)."""
        return list(self.pages(paths.TOKENS, page=page, include_revoked=include_revoked))

    def tokens_page(
        self,
        include_revoked: bool = False,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> Dict[str, Any]:
        """One page of tokens with ``count`` and ``next_cursor``."""
        return self.page(paths.TOKENS, include_revoked=include_revoked, limit=limit, cursor=cursor)

    def revoke_token(self, token_id: str) -> Dict[str, Any]:
        return self.json("POST", paths.token_revoke(token_id))

    # --- registered environments ----------------------------------------------------------

    def register_environment(self, name: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        """A new version when ``spec`` differs from the latest of ``name``, else the latest."""
        return self.json("POST", paths.environment(name), json=spec)

    def get_environment(
        self, name: str, version: Optional[Union[int, str]] = None
    ) -> Dict[str, Any]:
        params = {"version": version} if version is not None else None
        return self.json("GET", paths.environment(name), params=params)

    def list_environments(self, page: Optional[int] = None) -> List[Dict[str, Any]]:
        """The latest version of each registered environment, by name, read ``page`` at a
        time (``environments_page`` for one)."""
        return list(self.pages(paths.ENVIRONMENTS, page=page))

    def environments_page(
        self, limit: Optional[int] = None, cursor: Optional[str] = None
    ) -> Dict[str, Any]:
        """One page of the latest environments with ``count`` and ``next_cursor``."""
        return self.page(paths.ENVIRONMENTS, limit=limit, cursor=cursor)

    def environment_versions(self, name: str, page: Optional[int] = None) -> List[Dict[str, Any]]:
        """Every version of ``name``, newest first."""
        return list(self.pages(paths.environment_versions(name), page=page))

    # --- experiments and runs ---------------------------------------------------------------

    def list_experiments(self) -> List[Dict[str, Any]]:
        return self.json("GET", paths.EXPERIMENTS)["data"]

    def has_snapshot(self, digest: str) -> bool:
        """Whether the service has it (a run's own token may not ask: then send it)."""
        try:
            self.request("HEAD", paths.snapshot(digest))
        except RunyardError as exc:
            if exc.http_status in (403, 404):
                return False
            raise
        return True

    def submit(self, spec: Dict[str, Any], archive: Optional[bytes] = None) -> Dict[str, Any]:
        files = {"snapshot": ("snapshot.tar.gz", archive, "application/gzip")} if archive else {}
        body, content_type = encode_multipart({"spec": dumps(spec)}, files)
        headers = {"Content-Type": content_type}
        return self.json("POST", paths.RUNS, content=body, headers=headers)

    def submit_array(self, spec: Dict[str, Any], archive: Optional[bytes] = None) -> Dict[str, Any]:
        """A job array: ``spec`` with ``arguments_list``, one run per entry."""
        files = {"snapshot": ("snapshot.tar.gz", archive, "application/gzip")} if archive else {}
        body, content_type = encode_multipart({"spec": dumps(spec)}, files)
        headers = {"Content-Type": content_type}
        return self.json("POST", paths.RUN_ARRAY, content=body, headers=headers)

    def start_interactive(
        self, experiment: str, display_name: Optional[str] = None
    ) -> Dict[str, Any]:
        """A run logged from outside Runyard (``start_logging``), with its own run token."""
        body = {"experiment": experiment, "display_name": display_name}
        return self.json("POST", paths.INTERACTIVE_RUNS, json=body)

    def get_run(self, run_id: str, fresh: bool = False) -> Dict[str, Any]:
        """With ``fresh``, read once everything reported before the call is stored."""
        params = {"fresh": True} if fresh else None
        return self.json("GET", paths.run(run_id), params=params)

    def list_runs(self, **filters: Any) -> List[Dict[str, Any]]:
        """One page of runs (``limit``, default 100; ``cursor`` for a later page)."""
        return self.json("GET", paths.RUNS, params=filters)["data"]

    def runs_page(self, **filters: Any) -> Dict[str, Any]:
        """One page of runs with ``count`` and ``next_cursor``."""
        return self.page(paths.RUNS, **filters)

    def count_runs(self, **filters: Any) -> int:
        """How many runs the filters match (one page of one run is read)."""
        return self.json("GET", paths.RUNS, params={**filters, "limit": 1})["count"]

    def iter_runs(self, page: int = 100, **filters: Any) -> Iterator[Dict[str, Any]]:
        """Every run the filters match, following cursors: a page is read only when the
        one before is used up (what ``Experiment.get_runs`` and ``get_children`` yield)."""
        return self.pages(paths.RUNS, page=page, **filters)

    def build_environment(
        self, environment: Dict[str, Any], cluster: Optional[str] = None
    ) -> Dict[str, Any]:
        """Queue a run that builds ``environment`` on ``cluster`` (None: the default) and
        ends; the run, as ``get_run`` shows it."""
        body = {"environment": environment, "cluster": cluster}
        return self.json("POST", paths.ENVIRONMENT_BUILDS, json=body)

    def latest_environment_build(self, name: str, version: Optional[str]) -> Dict[str, Any]:
        """The latest completed run that ran with environment ``name`` at ``version``."""
        params = {"name": name} if version is None else {"name": name, "version": version}
        return self.json("GET", paths.LATEST_ENVIRONMENT_BUILD, params=params)

    def cancel(self, run_id: str) -> Dict[str, Any]:
        return self.json("POST", paths.run_cancel(run_id))

    def fail(self, run_id: str, reason: str) -> Dict[str, Any]:
        return self.json("POST", paths.run_fail(run_id), json={"error": reason})

    def cancel_many(self, run_ids: List[str]) -> List[Dict[str, Any]]:
        return self.json("POST", paths.CANCEL_RUNS, json={"run_ids": run_ids})["data"]

    # --- what a run logged ------------------------------------------------------------------

    def send_events(
        self, run_id: str, batch: Dict[str, Any], timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        """A batch of tracking events for the run's tree (``runyard.tracking.sinks``); with
        ``batch["wait"]`` it returns once they are stored."""
        return self.json("POST", paths.run_events(run_id), json=batch, timeout=timeout)

    def get_tags(self, run_id: str) -> Dict[str, Optional[str]]:
        return self.json("GET", paths.run_tags(run_id))

    def get_properties(self, run_id: str) -> Dict[str, str]:
        return self.json("GET", paths.run_properties(run_id))

    def get_metrics(
        self, run_id: str, name: Optional[str] = None, recursive: bool = False
    ) -> Dict[str, Any]:
        """``{"runs": {run id: {name: {"kind": ..., "points": [...]}}}}``."""
        params = {"name": name, "recursive": recursive}
        return self.json("GET", paths.run_metrics(run_id), params=params)

    def metric_names(self, run_id: str) -> List[Dict[str, Any]]:
        """Each series of the run: name, kind, count of points, latest value."""
        return self.json("GET", paths.run_metric_names(run_id))["data"]

    def logs(self, run_id: str) -> str:
        return self.request("GET", paths.run_logs(run_id)).text

    def follow_logs(self, run_id: str) -> Iterator[str]:
        """Yield the log as it is written (from the run's Server-Sent Events), returning
        when the run has ended."""
        for event, data in self.events(run_id, history=True):
            if event == "log":
                yield data["text"]

    def events(self, run_id: str, history: bool = False) -> Iterator[Tuple[str, Any]]:
        """The run's Server-Sent Events as (event, data) until it ends."""
        return self.server_events(paths.run_events(run_id), {"history": history})

    # --- files and snapshots ----------------------------------------------------------------

    def download_snapshot(self, digest: str, destination: Path) -> None:
        self.download(paths.snapshot(digest), destination)

    def download_run_snapshot(self, run_id: str, destination: Path) -> None:
        self.download(paths.run_snapshot(run_id), destination)

    def upload_file(
        self, run_id: str, name: str, content: Union[IO[bytes], bytes]
    ) -> Dict[str, Any]:
        return self.json("PUT", paths.run_file(run_id, name), content=content)

    def list_files(self, run_id: str) -> List[Dict[str, Any]]:
        return self.json("GET", paths.run_files(run_id))["data"]

    def download_file(self, run_id: str, name: str, destination: Path) -> None:
        self.download(paths.run_file(run_id, name), destination)
