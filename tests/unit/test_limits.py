"""Limits (``protocol.limits``): by default the service enforces the very limits the SDK
checks in the run, so a script hears of a limit before its data leaves it."""

from __future__ import annotations

import os

import pytest

from protocol.settings import Settings
from runyard.snapshot import SnapshotLimits
from runyard.tracking import events as ev


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in os.environ:
        if name.startswith("RUNYARD_"):
            monkeypatch.delenv(name)
    return Settings()


def test_the_service_enforces_the_sdks_tracking_limits(default_settings: Settings) -> None:
    sdk = ev.Limits()
    service = default_settings.tracking_limits
    assert (service.metric_names, service.tags, service.properties) == (
        sdk.metric_names,
        sdk.tags,
        sdk.properties,
    )


def test_the_service_enforces_the_sdks_snapshot_limits(default_settings: Settings) -> None:
    assert default_settings.snapshot_limits == SnapshotLimits()
