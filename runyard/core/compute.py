"""``ComputeTarget`` and ``AmlCompute``: a Runyard cluster under Azure's names.

``ComputeTarget(ws, name)`` finds a cluster (``ComputeTargetException`` when there is none),
``ComputeTarget.create(ws, name, AmlCompute.provisioning_configuration(max_nodes=4))``
creates one whose node limit is ``max_nodes``. Nodes are the workers that serve a cluster,
so settings about virtual machines cannot be honoured: they are named in a warning.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from runyard.errors import ClusterNotFound

if TYPE_CHECKING:
    from runyard.core.workspace import Workspace


class ComputeTargetException(ClusterNotFound):
    """No cluster has that name (Azure raises this from ``ComputeTarget(ws, name)``)."""


class AmlComputeProvisioningConfiguration:
    def __init__(self, max_nodes: int = 1, ignored: Optional[Dict[str, Any]] = None) -> None:
        self.max_nodes = max_nodes
        self.ignored = ignored or {}


class ComputeTarget:
    type = "AmlCompute"

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        try:
            self._data = workspace.client.get_cluster(name)
        except ClusterNotFound:
            raise ComputeTargetException(
                f"ComputeTargetNotFound: compute target with name {name!r} not found in "
                f"the workspace (clusters: {_names(workspace)})"
            ) from None

    @classmethod
    def _from_data(cls, workspace: Workspace, data: Dict[str, Any]) -> ComputeTarget:
        target = cls.__new__(cls)
        target.workspace, target.name, target._data = workspace, data["name"], data
        return target

    @staticmethod
    def create(workspace: Workspace, name: str, provisioning_configuration: Any) -> ComputeTarget:
        """Create a cluster (an admin's right) with ``max_nodes`` as its node limit."""
        config = provisioning_configuration
        if config.ignored:
            warnings.warn(
                f"cluster {name!r}: {', '.join(sorted(config.ignored))} not used: a Runyard "
                "cluster's nodes are the workers that serve it",
                stacklevel=2,
            )
        data = workspace.client.create_cluster(name, nodes=config.max_nodes)
        return ComputeTarget._from_data(workspace, data)

    @staticmethod
    def list(workspace: Workspace) -> List[ComputeTarget]:
        return [ComputeTarget._from_data(workspace, c) for c in workspace.client.list_clusters()]

    @property
    def provisioning_state(self) -> str:
        return "Succeeded"

    @property
    def max_nodes(self) -> int:
        return int(self._data.get("nodes", 1))

    def get_status(self) -> Dict[str, Any]:
        """Nodes, workers and queue depth now."""
        self._data = self.workspace.client.get_cluster(self.name)
        return {
            "maxNodes": self._data.get("nodes"),
            "workers": len(self._data.get("workers") or []),
            "slots": self._data.get("slots"),
            "runningRunCount": self._data.get("active"),
            "queuedRunCount": self._data.get("queued"),
        }

    def wait_for_completion(self, show_output: bool = False, **_: Any) -> None:
        """Provisioning is immediate: a cluster exists once created."""
        if show_output:
            print(f"cluster {self.name}: Succeeded")

    def delete(self) -> None:
        self.workspace.client.delete_cluster(self.name)

    def serialize(self) -> Dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"ComputeTarget(name={self.name!r}, max_nodes={self.max_nodes})"


class AmlCompute(ComputeTarget):
    @staticmethod
    def provisioning_configuration(
        vm_size: str = "", max_nodes: int = 1, **settings: Any
    ) -> AmlComputeProvisioningConfiguration:
        ignored = {k: v for k, v in settings.items() if v is not None}
        if vm_size:
            ignored["vm_size"] = vm_size
        return AmlComputeProvisioningConfiguration(max_nodes=max_nodes, ignored=ignored)


def _names(workspace: Workspace) -> str:
    try:
        names = [c["name"] for c in workspace.client.list_clusters()]
    except Exception:
        return "unknown"
    return ", ".join(names) or "none"
