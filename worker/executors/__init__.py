"""Executors start a run's process somewhere (a local process, a container) and stop it."""

from __future__ import annotations

from worker.executors.base import Execution, ExecutionRequest, Executor, ExecutorUnavailable
from worker.executors.local import LocalExecutor

__all__ = [
    "Execution",
    "ExecutionRequest",
    "Executor",
    "ExecutorUnavailable",
    "LocalExecutor",
    "executor_named",
]

_EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor}


def executor_named(name: str) -> Executor:
    try:
        return _EXECUTORS[name]()
    except KeyError:
        raise ExecutorUnavailable(
            f"this worker has no {name!r} executor (available: {', '.join(sorted(_EXECUTORS))})"
        ) from None
