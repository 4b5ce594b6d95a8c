"""Attacks by runs on the service, each a real script in a real worker (a local process, and
in a container where the attack applies). After each: nothing outside the run was reached
or changed, an honest run on the same cluster completes, and the API stays ready."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from runyard.core import Environment, Run
from tests.support.runs import local_env, submit, write
from tests.support.services import ADMIN, Stack, unique

HONEST = "from runyard.core import Run\nrun = Run.get_context()\nrun.log('honest', 1)\n"


@dataclass
class Target:
    """A cluster of one executor kind with a worker serving it."""

    stack: Stack
    cluster: str
    executor: str
    folder: Path
    container: dict[str, object]  # the cluster's container policy (Docker clusters)

    def confine(self, **policy: object) -> None:
        """Change the cluster's container policy (its image kept)."""
        self.container = {**self.container, **policy}
        self.stack.client().update_cluster(self.cluster, container=self.container)

    def submit(self, script: str, name: str = "attack.py") -> Run:
        write(self.folder, {name: script})
        env = local_env() if self.executor == "local" else Environment("image")
        return submit(
            self.stack.url, self.folder, name, self.cluster, experiment="hostile", environment=env
        )

    def wait_for_output(self, run: Run, text: str) -> None:
        """Follow the run's log until it prints ``text`` (what the script does, not a
        promise of the API, so it is waited for)."""
        stream = self.stack.client().follow_logs(run.id)
        try:
            for chunk in stream:
                if text in chunk:
                    return
        finally:
            stream.close()
        raise AssertionError(f"run {run.id} ended without printing {text!r}")

    def assert_still_serving(self) -> None:
        """An honest run on the same cluster completes with its data; the API is ready."""
        run = self.submit(HONEST, "honest.py")
        assert run.wait_for_completion()["status"] == "Completed"
        assert run.get_metrics() == {"honest": 1}
        assert httpx.get(f"{self.stack.url}/readyz", headers=ADMIN, timeout=10).status_code == 200


@pytest.fixture(params=["local", "docker"])
def target(request: pytest.FixtureRequest, stack: Stack, workers, tmp_path: Path) -> Target:  # type: ignore[no-untyped-def]
    executor = request.param
    cluster = unique(f"hostile-{executor}")
    settings: dict[str, object] = {"nodes": 1, "cancel_grace_seconds": 2}
    container: dict[str, object] = {}
    if executor == "docker":
        container = {"image": request.getfixturevalue("run_image"), "memory_mib": 512}
        settings.update(executor="docker", container=container)
    stack.client().create_cluster(cluster, **settings)
    workers.start(cluster)
    return Target(stack, cluster, executor, tmp_path / "src", container)
