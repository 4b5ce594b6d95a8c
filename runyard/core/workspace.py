"""``Workspace``: where the Runyard service is, and the client to talk to it."""

from __future__ import annotations

import os
from typing import Any

from runyard import config as client_config
from runyard.client import Client


class Workspace:
    def __init__(
        self,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace_name: str = "runyard",
        *,
        url: str | None = None,
        token: str | None = None,
        **_azure_only: Any,
    ) -> None:
        """Azure's positional arguments are accepted and ignored; ``url`` names the service."""
        loaded = client_config.load() if url is None else None
        self.name = workspace_name
        self.url = (url or (loaded.url if loaded else client_config.DEFAULT_URL)).rstrip("/")
        self._token = token if token is not None else (loaded.token if loaded else None)
        self._client: Client | None = None

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **_: Any) -> Workspace:
        loaded = client_config.load(path)
        return cls(url=loaded.url, token=loaded.token)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self._token)
        return self._client

    @property
    def compute_targets(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.client.list_clusters()}

    @property
    def experiments(self) -> dict[str, Any]:
        from runyard.core.experiment import Experiment

        return {
            e["name"]: Experiment(self, e["name"])
            for e in self.client.json("GET", "/experiments")["data"]
        }

    def get_portal_url(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, url={self.url!r})"
