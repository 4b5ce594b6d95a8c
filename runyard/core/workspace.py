"""``Workspace``: where the Runyard service is, and the client to talk to it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Optional

from runyard import config as client_config
from runyard.client import Client

if TYPE_CHECKING:
    from runyard.core.compute import ComputeTarget
    from runyard.core.experiment import Experiment
    from runyard.core.run import Run


class Workspace:
    def __init__(
        self,
        subscription_id: Optional[str] = None,
        resource_group: Optional[str] = None,
        workspace_name: str = "runyard",
        auth: Any = None,
        _location: Optional[str] = None,
        _disable_service_check: bool = False,
        _workspace_id: Optional[str] = None,
        sku: str = "basic",
        _cloud: str = "AzureCloud",
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        """Azure's arguments are kept (for printing) but name nothing: the service is
        ``url`` (else RUNYARD_URL or the nearest Runyard config file)."""
        loaded = client_config.load() if url is None else None
        self.name = workspace_name
        self.subscription_id = subscription_id or ""
        self.resource_group = resource_group or ""
        self.url = (url if url is not None else loaded.url if loaded else "").rstrip("/")
        self.location = self.url  # Azure's region; here, where the service runs
        self._token = token if token is not None else (loaded.token if loaded else None)
        self._client: Optional[Client] = None

    @classmethod
    def from_config(
        cls, path: "str | os.PathLike[str] | None" = None, auth: Any = None, **_: Any
    ) -> Workspace:
        loaded = client_config.load(path)
        return cls(url=loaded.url, token=loaded.token)

    @classmethod
    def get(cls, name: str = "runyard", **_: Any) -> Workspace:
        """The service found as ``from_config`` finds it, under ``name``."""
        loaded = client_config.load()
        return cls(workspace_name=name, url=loaded.url, token=loaded.token)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self._token)
        return self._client

    @property
    def compute_targets(self) -> Dict[str, ComputeTarget]:
        from runyard.core.compute import ComputeTarget

        return {c.name: c for c in ComputeTarget.list(self)}

    @property
    def experiments(self) -> Dict[str, Experiment]:
        from runyard.core.experiment import Experiment

        return {e["name"]: Experiment(self, e["name"]) for e in self.client.list_experiments()}

    def get_run(self, run_id: str) -> Run:
        """A run by id, whichever experiment it is in."""
        from runyard.core.experiment import Experiment
        from runyard.core.run import Run

        data = self.client.get_run(run_id)
        return Run(Experiment(self, data["experiment"]), run_id, _details=data)

    def get_portal_url(self) -> str:
        return self.url

    def get_details(self) -> Dict[str, Any]:
        return {"name": self.name, "location": self.location, "url": self.url}

    def __repr__(self) -> str:
        return f"Workspace.create(name={self.name!r}, url={self.url!r})"
