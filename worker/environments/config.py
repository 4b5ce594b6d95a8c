"""What a worker's builds need to know: where the cache is, its size limit, the build
timeout, and the Redis that build locks live in (shared by the cluster's workers)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.settings import Settings
from worker.environments.cache import EnvironmentCache


@dataclass(frozen=True)
class BuildConfig:
    cache_dir: Path
    max_mib: int = 20480
    timeout_seconds: float = 1800.0
    # A redis.Redis: locks across workers. None: only this host's file locks.
    redis: Any = field(default=None, compare=False, repr=False)
    # Labels of the containers and images a build makes on a Docker engine (the worker's
    # and its deployment's: a starting worker removes those a dead build left).
    owner: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, redis: Any = None) -> BuildConfig:
        return cls(
            cache_dir=settings.env_cache,
            max_mib=settings.env_cache_max_mib,
            timeout_seconds=settings.env_build_timeout_seconds,
            redis=redis,
        )

    @property
    def cache(self) -> EnvironmentCache:
        return _cache_at(self.cache_dir)


@functools.cache
def _cache_at(root: Path) -> EnvironmentCache:
    return EnvironmentCache(root)


@functools.cache
def _defaults() -> BuildConfig:
    return BuildConfig.from_settings(Settings())


def config_of(builds: BuildConfig | None) -> BuildConfig:
    """A node's build settings, else the defaults of this process's settings."""
    return builds if builds is not None else _defaults()
