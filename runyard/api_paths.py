"""Every path of the Runyard API that the SDK, the CLI and the notebook widget call, named
once (under ``/api/v1``, which the transport adds).

``runyard.client.Client`` calls them by name; the widget's asynchronous reader, which
cannot use the blocking client, asks here for the same paths. Each name is quoted into
its path, so an id or a file name never changes which route is called. Standard library
only, Python 3.9 syntax: the run side imports it.
"""

from __future__ import annotations

import urllib.parse

HEALTH = "/healthz"  # outside /api/v1: the load balancer's probe
WHOAMI = "/whoami"
AUDIT = "/audit"
CLUSTERS = "/clusters"
WORKERS = "/workers"
TOKENS = "/tokens"
EXPERIMENTS = "/experiments"
RUNS = "/runs"
RUN_ARRAY = "/runs/array"  # a job array: many runs in one submit
CANCEL_RUNS = "/runs/cancel"  # many at once
INTERACTIVE_RUNS = "/runs/interactive"  # Experiment.start_logging()
ENVIRONMENTS = "/environments"  # registered: the latest version of each
ENVIRONMENT_BUILDS = "/environment-builds"  # env.build(ws): a run that builds and ends
LATEST_ENVIRONMENT_BUILD = "/environment-builds/latest"  # env.get_image_details(ws)
USAGE = "/usage"  # slot- and GPU-hours per team, user, cluster, day


def _q(value: str, safe: str = "") -> str:
    return urllib.parse.quote(value, safe=safe)


def cluster(name: str) -> str:
    return f"{CLUSTERS}/{_q(name)}"


def cluster_runs(name: str) -> str:
    return f"{cluster(name)}/runs"


def cluster_cancel_queued(name: str) -> str:
    return f"{cluster(name)}/cancel-queued"


def worker_drain(worker_id: str) -> str:
    return f"{WORKERS}/{_q(worker_id)}/drain"


def token_revoke(token_id: str) -> str:
    return f"{TOKENS}/{_q(token_id)}/revoke"


def snapshot(digest: str) -> str:
    return f"/snapshots/{_q(digest)}"


def environment(name: str) -> str:
    """Register a version (POST), or read one (GET, ``?version=``; none: the latest)."""
    return f"{ENVIRONMENTS}/{_q(name)}"


def environment_versions(name: str) -> str:
    """Every registered version of an environment, newest first."""
    return f"{environment(name)}/versions"


def run(run_id: str) -> str:
    return f"{RUNS}/{_q(run_id)}"


def run_cancel(run_id: str) -> str:
    """Cancel one run."""
    return f"{run(run_id)}/cancel"


def run_fail(run_id: str) -> str:
    """End a run Failed, with a reason."""
    return f"{run(run_id)}/fail"


def run_logs(run_id: str) -> str:
    """The run's combined output so far, as text."""
    return f"{run(run_id)}/logs"


def run_events(run_id: str) -> str:
    """The run's Server-Sent Events (GET) / a batch of its tracking events (POST)."""
    return f"{run(run_id)}/events"


def run_tags(run_id: str) -> str:
    return f"{run(run_id)}/tags"


def run_properties(run_id: str) -> str:
    return f"{run(run_id)}/properties"


def run_metrics(run_id: str) -> str:
    """Every series of the run (or its tree), with its points."""
    return f"{run(run_id)}/metrics"


def run_metric_names(run_id: str) -> str:
    """Each series' name, kind, count and latest value."""
    return f"{run(run_id)}/metric-names"


def run_files(run_id: str) -> str:
    """The list of the run's stored files."""
    return f"{run(run_id)}/files"


def run_snapshot(run_id: str) -> str:
    """The snapshot the run was submitted with, as a tar.gz."""
    return f"{run(run_id)}/snapshot"


def run_token(run_id: str) -> str:
    """Workers: a token for the run itself."""
    return f"{run(run_id)}/run-token"


def run_file(run_id: str, name: str) -> str:
    """A stored file of the run; ``name`` keeps its folders (``outputs/model.pt``)."""
    return f"{run_files(run_id)}/{_q(name, '/')}"


def metric_history(run_id: str, name: str) -> str:
    """One series' points, downsampled to ``max_points`` by the API."""
    return f"{run_metrics(run_id)}/{_q(name)}/history"
