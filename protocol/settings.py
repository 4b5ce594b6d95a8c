"""Service settings, one validated object read from ``RUNYARD_*`` environment variables.

The API, the scheduler and the workers all read this; each uses the part it needs.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol import keys
from protocol.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, TrackingLimits
from runyard.snapshot import SnapshotLimits


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

    # Liveness: workers refresh a key per run every heartbeat_interval seconds, each living
    # not_responding_after seconds in Redis (Redis' clock, not the hosts'); a run whose key
    # has expired becomes NotResponding at the next sweep, and Failed (or requeued) after a
    # further failed_after seconds without a sign of life. With these defaults a dead node's
    # runs are NotResponding 4-6 s after it died and Failed/requeued 10 s later, and a worker
    # may miss four beats in a row (a saturated CPU, a slow Redis) without a false alarm.
    heartbeat_interval: float = Field(1.0, gt=0)
    not_responding_after: float = Field(5.0, gt=0)
    failed_after: float = Field(10.0, gt=0)
    # A run handed to the broker that no worker has claimed after this long is re-sent.
    dispatch_timeout: float = Field(60.0, gt=0)
    # Ingest entries a scheduler read from its own shard but left unacknowledged this long
    # are applied again (a shard's next holder takes its predecessor's at once).
    ingest_reclaim_after: float = Field(30.0, gt=0)
    # How often the scheduler runs its safety-net sweep (dispatch, watchdog, reclaim).
    sweep_interval: float = Field(1.0, gt=0)
    # Scheduler leadership: the leader's lease in Redis lasts this long unless renewed; it
    # is renewed, and followers try to take it, every leader_renew_seconds. A killed leader
    # is replaced within lease + renew seconds.
    leader_lease_seconds: float = Field(3.0, gt=0)
    leader_renew_seconds: float = Field(1.0, gt=0)
    # How many streams the ingest is sharded into by run id (each consumed by one scheduler
    # at a time, under a lease renewed like the leader's). The API, every worker and every
    # scheduler must use the same number (producers choose the shard): change it only with
    # all of them stopped and the ingest drained (runyard_ingest_lag 0).
    ingest_shards: int = Field(keys.DEFAULT_INGEST_SHARDS, ge=1, le=1024)

    # Per-run tracking limits enforced at ingest (the SDK checks the same in the run).
    limit_metric_names: int = Field(TrackingLimits.metric_names, ge=1)
    limit_tags: int = Field(TrackingLimits.tags, ge=1)
    limit_properties: int = Field(TrackingLimits.properties, ge=1)

    # Worker-side directories (per-run working dirs and the snapshot cache).
    work_dir: Path | None = None
    # "uid[:gid]" that local-executor runs execute as (the worker must be root to switch):
    # another user than the worker's cannot read its /proc, environment or files.
    run_as: str | None = Field(None, pattern=r"^[0-9]+(:[0-9]+)?$")
    # Built environments (worker.environments): where venvs and build records live (empty:
    # ``<work dir>/environments``), how large the cache may grow before its least recently
    # used environments go, and how long one build may take before it is killed.
    env_cache_dir: Path | None = None
    env_cache_max_mib: int = Field(20480, ge=1)
    env_build_timeout_seconds: float = Field(1800.0, gt=0)

    # Signs run-scoped and CSRF tokens: the API's alone (replicas share it). Empty: a random
    # key kept in data_dir/secret_key (mode 0600), which suits a single API process.
    secret_key: SecretStr | None = None
    # Tokens registered at API start when given (compose/Helm secrets): an admin token, and
    # a worker token bound to every cluster. Per-cluster worker tokens: `runyard token create`.
    bootstrap_admin_token: SecretStr | None = None
    bootstrap_worker_token: SecretStr | None = None
    # Worker pools registered at API start, each with a token of its own bound to its
    # clusters: "pool=cluster[,cluster...]" entries separated by spaces or ';' (e.g.
    # "cpu=cpu gpu=gpu,gpu-big"). Each pool's token is read from its own variable,
    # RUNYARD_BOOTSTRAP_WORKER_TOKEN_<POOL> (upper case, '-' as '_'), so that it can come
    # from its own secret (api/app.py: bootstrap_worker_pools).
    bootstrap_worker_tokens: str = ""
    # Submissions allowed per token (a `limits` rate string, e.g. "120/minute;2000/hour").
    submit_rate_limit: str = "120/minute"
    # Runs queued through job arrays per token, on top of the array counting as one
    # submission above (api/rate_limits.py): a 10,000-run array fits, a flood does not.
    array_run_rate_limit: str = "20000/hour"
    # /readyz without a token, for probes that cannot send one (Kubernetes httpGet).
    public_readyz: bool = False
    # Studio sign-ins last this long.
    session_hours: float = Field(12.0, gt=0)
    # Session cookies marked Secure: None decides by the request's scheme; set true when a
    # TLS proxy in front speaks plain HTTP to the API.
    cookie_secure: bool | None = None
    # Who may show the Studio in a frame (CSP frame-ancestors), e.g. an internal portal.
    # The Jupyter widget needs none: it draws in the notebook from the kernel.
    studio_frame_ancestors: str = "'self'"
    # Live streams (Server-Sent Events, followed logs) one token may hold open at once.
    live_streams_per_token: int = Field(16, ge=1)
    # Largest request body outside the upload paths (which have their own limits).
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    max_event_batch_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_file_bytes: int = Field(5 * 1024**3, ge=1024)

    @model_validator(mode="after")
    def _beats_fit_the_timeout(self) -> Settings:
        """A timeout shorter than a beat would fail every run between two beats: refuse it.
        (Allow several beats per timeout: the defaults fit five, tolerating four late.)"""
        if self.not_responding_after < self.heartbeat_interval:
            raise ValueError(
                f"not_responding_after ({self.not_responding_after:g}s) is shorter than "
                f"heartbeat_interval ({self.heartbeat_interval:g}s): every run would be "
                "taken for lost between two beats; make it several intervals"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'runyard.db').resolve()}"

    @field_validator("submit_rate_limit", "array_run_rate_limit")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '120/minute': {exc}") from None
        return value

    @model_validator(mode="after")
    def _renew_within_lease(self) -> Settings:
        if self.leader_renew_seconds >= self.leader_lease_seconds:
            raise ValueError(
                "leader_renew_seconds must be shorter than leader_lease_seconds "
                "(a leader renews its lease before it runs out)"
            )
        return self

    @cached_property
    def signing_key(self) -> bytes:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".secret_key.{os.getpid()}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
            try:
                os.link(draft, path)  # atomic: the first process of the stack wins
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return path.read_text().strip().encode()

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

    @property
    def env_cache(self) -> Path:
        return self.env_cache_dir or (self.worker_dir / "environments")
