"""One exception tree: every exception Runyard defines is a ``RunyardError`` from
``runyard.errors``, and the tracking sinks still keep their own signals from a script."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest

from runyard import errors
from runyard.errors import Conflict, RunyardError, ServiceUnavailable
from runyard.tracking.sinks import HttpSink

PACKAGES = ("runyard", "protocol", "worker")
# Azure's own name, defined where Azure code imports it (azureml.core.compute_target).
AZURE_NAMES = {"runyard.core.compute.ComputeTargetException"}


def defined_exceptions() -> list[type[BaseException]]:
    found = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith(".__main__"):
                continue  # runs the CLI when imported
            module = importlib.import_module(info.name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseException) and value.__module__ == info.name:
                    found.append(value)
    return found


def test_every_exception_runyard_defines_is_in_the_one_tree() -> None:
    outside = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in defined_exceptions()
        if not issubclass(cls, RunyardError)
        or (
            cls.__module__ != "runyard.errors"
            and f"{cls.__module__}.{cls.__name__}" not in AZURE_NAMES
        )
    ]
    assert outside == []


def test_the_old_import_paths_name_the_same_classes() -> None:
    from protocol.messages import MessageError
    from runyard.tracking.events import LimitExceeded
    from worker.executors import ExecutorUnavailable
    from worker.executors.base import ExecutionFailed
    from worker.run_folder import UnsafeEntry

    assert MessageError is errors.MessageError
    assert LimitExceeded is errors.LimitExceeded
    assert issubclass(LimitExceeded, errors.InvalidInput)
    assert ExecutorUnavailable is errors.ExecutorUnavailable
    assert ExecutionFailed is errors.ExecutionFailed
    assert UnsafeEntry is errors.UnsafeEntry
    assert issubclass(UnsafeEntry, OSError)  # the worker's file handling catches it so


class Refusing:
    """A service that answers every batch of events with ``error``."""

    def __init__(self, error: RunyardError) -> None:
        self.error = error

    def send_events(self, run_id: str, batch: dict, timeout: float | None = None) -> Any:
        raise self.error


def sink_for(error: RunyardError) -> HttpSink:
    sink = HttpSink(Refusing(error), "run-1")
    sink.close(timeout=0)  # no background thread racing the test's own writes
    sink._thread.join()
    return sink


def test_a_sync_while_the_service_is_away_says_so_and_does_not_raise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = sink_for(ServiceUnavailable("cannot reach Runyard"))
    sink.emit({"r": "run-1", "k": "m", "n": "loss", "v": 1.0})

    assert sink.sync(timeout=0) is False

    assert "could not confirm that what was logged is stored" in capsys.readouterr().err
    assert len(sink._buffer) == 1  # kept for the next try


def test_a_refused_batch_is_dropped_with_a_word_unless_the_call_asked_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = sink_for(Conflict("property 'a' is set already"))
    sink.emit({"r": "run-1", "k": "prop", "v": {"a": "2"}})
    assert sink.sync() is False
    assert "dropped 1 event(s) the service refused" in capsys.readouterr().err

    sink.emit({"r": "run-1", "k": "prop", "v": {"a": "2"}})
    with pytest.raises(Conflict, match="set already"):
        sink.sync(strict=True)
