"""Executors start a run's process somewhere (a local process, a container) and stop it."""

from __future__ import annotations

from protocol import environments
from worker.executors.base import (
    Execution,
    ExecutionRequest,
    Executor,
    ExecutorUnavailable,
    Node,
)

__all__ = [
    "Execution",
    "ExecutionRequest",
    "Executor",
    "ExecutorUnavailable",
    "Node",
    "executor_named",
]


def executor_named(name: str, node: Node) -> Executor:
    """The executor for a run (imported on first use: the docker SDK only where needed)."""
    if name not in node.executors:
        raise ExecutorUnavailable(
            f"worker {node.worker_id} does not run {name!r} runs "
            f"(it runs: {', '.join(node.executors)})"
        )
    if name == environments.Executor.LOCAL:
        from worker.executors.local import LocalExecutor

        return LocalExecutor(node)
    if name == environments.Executor.DOCKER:
        from worker.executors.docker import DockerExecutor

        return DockerExecutor(node)
    raise ExecutorUnavailable(
        f"this worker has no {name!r} executor (available: {', '.join(environments.EXECUTORS)})"
    )
