"""``env.build(ws)`` and ``env.get_image_details(ws)``: an environment built ahead of any
run, and what its latest build recorded.

A build is a run of its own on a cluster (Azure's ``image_build_compute``): a worker there
builds the environment as it would for a run, records what it built, and ends Completed
with no script. Its log is the build log. ``Environment.build`` and
``Environment.get_image_details`` call the two functions here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from runyard.core.run_follow import follow_to_end
from runyard.errors import Forbidden, NotFound
from runyard.status import RunStatus

if TYPE_CHECKING:
    from runyard.core.compute import ComputeTarget
    from runyard.core.environment import Environment
    from runyard.core.run import Run
    from runyard.core.workspace import Workspace

# Azure's names for where an image build is (ImageBuildDetails.status), by run status.
BUILD_STATUS = {
    RunStatus.NOT_STARTED.value: "Queued",
    RunStatus.QUEUED.value: "Queued",
    RunStatus.COMPLETED.value: "Succeeded",
    RunStatus.FAILED.value: "Failed",
    RunStatus.CANCELED.value: "Canceled",
}
RUNNING = "Running"  # every other (active) run status


class EnvironmentBuild:
    """What ``env.build(ws)`` returns (Azure's ``ImageBuildDetails``): the build's status,
    its log, and once it has run, the environment its worker recorded."""

    def __init__(self, workspace: Workspace, details: Dict[str, Any]) -> None:
        self.workspace = workspace
        self.run_id: str = details["id"]
        self._details = details

    @property
    def details(self) -> Dict[str, Any]:
        """The build's run as the service last showed it (``GET /runs/{id}``'s answer)."""
        return self._details

    def _refresh(self) -> Dict[str, Any]:
        self._details = self.workspace.client.get_run(self.run_id)
        return self._details

    @property
    def status(self) -> str:
        """Queued, Running, Succeeded, Failed or Canceled (Azure's build statuses)."""
        return BUILD_STATUS.get(self._refresh()["status"], RUNNING)

    @property
    def run(self) -> Run:
        """The build as the run it is (its details, files, log)."""
        from runyard.core.experiment import Experiment
        from runyard.core.run import Run

        experiment = Experiment(self.workspace, self._details["experiment"])
        return Run(experiment, self.run_id, _details=self._details)

    @property
    def log_url(self) -> str:
        """Where a person reads the build log: the build's run page in the Studio."""
        return f"{self.workspace.url}/runs/{self.run_id}"

    def get_log(self) -> str:
        """The build log so far."""
        return self.workspace.client.logs(self.run_id)

    @property
    def environment_used(self) -> Optional[Dict[str, Any]]:
        """Name, version, content hash and resolved packages of what was built (None until
        the worker has prepared it)."""
        return self._refresh().get("environment_used")

    def wait_for_completion(self, show_output: bool = True) -> EnvironmentBuild:
        """Return once the build has ended (as Azure, without raising when it failed: read
        ``status``); with ``show_output`` its log is printed as it is written."""
        write = sys.stdout.write if show_output else None
        self._details = follow_to_end(self.workspace.client, self.run_id, write)
        if show_output:
            print(f"\nImage Build Status: {BUILD_STATUS.get(self._details['status'])}", flush=True)
        return self

    def __repr__(self) -> str:
        return f"EnvironmentBuild(run_id={self.run_id!r}, status={self._details['status']!r})"


def build(
    env: Environment,
    workspace: Workspace,
    image_build_compute: Union[str, ComputeTarget, None] = None,
) -> EnvironmentBuild:
    """Queue a build of ``env`` on the cluster ``image_build_compute`` (None: the
    workspace's default cluster; the service says so when there is none)."""
    environment = env.to_dict()
    if env.version is not None and "version" not in environment:
        environment["version"] = str(env.version)
    cluster = getattr(image_build_compute, "name", image_build_compute)
    details = workspace.client.build_environment(environment, cluster)
    return EnvironmentBuild(workspace, details)


class DockerImageDetails(dict):  # type: ignore[type-arg]
    """What ``env.get_image_details(ws)`` returns: Azure's dict (``dockerImage`` with its
    ``name`` and ``registry``), with Runyard's ``hash``, ``packages`` and ``runId`` beside."""

    @property
    def image_exist(self) -> bool:
        return bool(self.get("imageExistsInRegistry"))

    @property
    def repository(self) -> Optional[str]:
        return (self.get("dockerImage") or {}).get("name")

    @property
    def registry(self) -> Optional[str]:
        return ((self.get("dockerImage") or {}).get("registry") or {}).get("address")

    @property
    def image(self) -> Optional[str]:
        """The image as a worker pulls it: ``<registry>/runyard-env:<hash>``."""
        if self.repository is None or self.registry is None:
            return self.repository
        return f"{self.registry}/{self.repository}"

    @property
    def interpreter_path(self) -> Optional[str]:
        return (self.get("pythonEnvironment") or {}).get("interpreterPath")

    @property
    def packages(self) -> List[str]:
        return list(self.get("packages") or [])


def image_details(env: Environment, workspace: Workspace) -> DockerImageDetails:
    """What the latest completed run with ``env`` (its name and version) recorded of it;
    for a registered version, the latest run built from that version's content (another
    run that only names itself so does not count). ``NotFound`` when no run has completed
    with it yet."""
    version = None if env.version is None else str(env.version)
    run = workspace.client.latest_environment_build(env.name, version)
    used = run.get("environment_used") or {}
    registry = _registry_of(workspace, run.get("cluster"))
    image = used.get("image")
    venv = used.get("venv")
    docker = None
    if image:
        docker = {"name": image, "registry": {"address": registry}}
    return DockerImageDetails(
        {
            "name": used.get("name"),
            "version": used.get("version"),
            "dockerImage": docker,
            "imageExistsInRegistry": bool(image and registry),
            "pythonEnvironment": {
                "interpreterPath": f"{venv}/bin/python" if venv else None,
                "condaEnvironmentPath": venv,
            },
            "hash": used.get("hash"),
            "specHash": used.get("spec_hash"),
            "packages": list(used.get("packages") or []),
            "runId": run["id"],
            "cluster": run.get("cluster"),
        }
    )


def _registry_of(workspace: Workspace, cluster: Optional[str]) -> Optional[str]:
    """The image registry the cluster's workers share builds through, if it names one."""
    if not cluster:
        return None
    try:
        settings = workspace.client.get_cluster(cluster)
    except (NotFound, Forbidden):
        return None  # deleted since, or not readable with this token: no registry known
    return (settings.get("container") or {}).get("registry")
