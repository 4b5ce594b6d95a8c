"""Service settings, one validated object read from ``RUNYARD_*`` environment variables.

The API, the scheduler and the workers all read this; each uses the part it needs.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from runyard.snapshot import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, SnapshotLimits
from scheduler.tracking import TrackingLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNYARD_", extra="ignore")

    # Where SQLite, snapshots and run files live in the embedded (single-host) setup.
    data_dir: Path = Path(".runyard")
    # SQLAlchemy URL; empty means a SQLite file inside data_dir.
    database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Where workers reach the API for snapshots and output uploads.
    api_url: str = "http://127.0.0.1:8642"
    # Optional TOML file declaring clusters, applied at start-up (create or update).
    clusters_file: Path | None = None

    # Server-side snapshot limits (the SDK checks its own before uploading).
    snapshot_max_bytes: int = DEFAULT_MAX_BYTES
    snapshot_max_files: int = DEFAULT_MAX_FILES

    # Liveness: workers refresh a key per run every heartbeat_interval seconds; a run whose
    # key is older than not_responding_after becomes NotResponding, and Failed after a
    # further failed_after seconds without a sign of life.
    heartbeat_interval: float = Field(2.0, gt=0)
    not_responding_after: float = Field(10.0, gt=0)
    failed_after: float = Field(20.0, gt=0)
    # A run handed to the broker that no worker has claimed after this long is re-sent.
    dispatch_timeout: float = Field(60.0, gt=0)
    # Ingest entries read but not acknowledged for this long belong to a consumer that died.
    ingest_reclaim_after: float = Field(30.0, gt=0)
    # How often the scheduler runs its safety-net sweep (dispatch, watchdog, reclaim).
    sweep_interval: float = Field(1.0, gt=0)

    # Per-run tracking limits enforced at ingest (the SDK checks the same in the run).
    limit_metric_names: int = Field(1000, ge=1)
    limit_tags: int = Field(100, ge=1)
    limit_properties: int = Field(100, ge=1)

    # Worker-side directories (per-run working dirs and the snapshot cache).
    work_dir: Path | None = None

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'runyard.db').resolve()}"

    @property
    def snapshot_limits(self) -> SnapshotLimits:
        return SnapshotLimits(max_bytes=self.snapshot_max_bytes, max_files=self.snapshot_max_files)

    @property
    def tracking_limits(self) -> TrackingLimits:
        return TrackingLimits(
            metric_names=self.limit_metric_names,
            tags=self.limit_tags,
            properties=self.limit_properties,
        )

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def run_files_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def worker_dir(self) -> Path:
        return self.work_dir or (self.data_dir / "worker")
