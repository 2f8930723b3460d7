"""Typed settings, read once at the edge (CLI, server start) and passed down.

Embedded defaults keep a newcomer's first run free of services: one SQLite file and an artifact folder
under ``./.modelyard/``. ``MODELYARD_DATABASE_URL`` (PostgreSQL) and ``MODELYARD_ARTIFACT_ROOT`` make many
processes share one registry and one prediction log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything modelyard reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="MODELYARD_", extra="ignore")

    home: Path = Field(default=Path(".modelyard"), description="Folder for the embedded defaults.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the registry database.")
    artifact_root: Path | None = Field(default=None, description="Folder of the content-addressed store.")
    cache_dir: Path | None = Field(default=None, description="Where verified bundles are unpacked.")
    admin_token: str | None = Field(default=None, description="Bearer token for /v1/admin; unset = off.")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, description="Largest request body served.")
    reload_interval: float = Field(default=2.0, description="Seconds between alias checks in servers.")
    grpc_port: int = Field(default=0, ge=0, le=65535,
                           description="Servers also speak the Open Inference Protocol over gRPC here (0: off).")
    grpc_host: str = Field(default="127.0.0.1", description="Address the gRPC server listens on.")
    log_batch_size: int = Field(default=500, description="Prediction records written per flush.")
    log_flush_interval: float = Field(default=0.5, description="Seconds between prediction-log flushes.")
    spill_dir: Path | None = Field(default=None, description="Folder of the prediction log's write-ahead "
                                   "segments (local to the machine; records wait there until shipped).")
    log_durability: Literal["process", "machine", "async"] = Field(
        default="process", description="When an answer may leave: process = its records are written to the "
        "segment (survives any crash of the process); machine = also fdatasync'd (survives power loss); "
        "async = records wait in memory (lossy: a crash loses up to log_flush_interval of answers).")
    log_ship_in_child: bool = Field(
        default=False, description="Servers ship the prediction log into its store from a child process "
        "instead of a thread (the event loop keeps its interpreter to itself): faster with a core to spare "
        "(one worker on two cores), slower with none (two workers on two cores).")
    log_on_failure: Literal["refuse", "serve"] = Field(
        default="refuse", description="When the segment cannot be written: refuse = 503 with Retry-After and "
        "/readyz unready; serve = answer anyway, unlogged on disk (a warning and a metric each time).")
    log_target: Literal["sql", "parquet"] = Field(
        default="sql", description="Where the shipper puts the prediction log: sql = the registry database's "
        "table; parquet = Parquet files partitioned by model and day under log_parquet_root (read with DuckDB: "
        "the 'parquet' extra).")
    log_parquet_root: Path | None = Field(default=None, description="Folder of the Parquet prediction log "
                                          "(default: <artifact root>/predictions; shared, as the artifacts).")
    log_retention: str | None = Field(
        default=None, description="Parquet log: delete days older than this duration (30d, 2w); unset = keep.")
    prediction_log: bool = Field(default=True, description="Servers log every prediction (off: benchmarks).")
    actor: str | None = Field(default=None, description="Who is recorded on registry events.")
    alert_webhook: str | None = Field(default=None, description="URL that receives alert JSON; unset = none.")
    monitor_interval: float = Field(default=60.0, description="Seconds between drift and alert evaluations.")
    monitor_window: str = Field(default="1h", description="Traffic each evaluation reads (15m, 1h).")
    batching: bool = Field(default=True, description="Servers coalesce concurrent small requests.")
    batch_max_rows: int = Field(default=256, description="Micro-batching: most rows in one predict call.")
    batch_max_wait_ms: float = Field(default=2.0, description="Micro-batching: longest wait for company.")
    batch_per_model: dict[str, dict[str, float]] = Field(
        default_factory=dict, description='Per-model overrides, JSON: {"name": {"max_batch_rows": 512}}.')
    shadow_queue_size: int = Field(default=1000, ge=1,
                                   description="Shadow and mirror jobs waiting in a server; more are dropped.")
    canary_mirror: bool = Field(default=True, description="Also run the primary on canary requests (route "
                                "'mirror', never returned) so the watcher can measure disagreement.")
    watch_interval: float = Field(default=5.0, ge=0, description="Seconds between canary watcher runs in "
                                  "servers (one replica acts, by lease); 0 = off.")
    retrain_interval: float = Field(default=10.0, ge=0, description="Seconds between the servers' checks "
                                    "for due or requested retrains (one replica acts, by lease); 0 = off.")
    watch_rules: dict[str, float | None] = Field(
        default_factory=dict, description='Canary watcher thresholds as JSON, e.g. {"window": 300, '
        '"max_error_rate": 0.05}; the names are the fields of rollout.WatchRules, null turns a rule off.')
    region: str | None = Field(default=None, description="Region label of this process in the fleet view "
                               "(heartbeats in the registry), e.g. ap-south-1.")
    zone: str | None = Field(default=None, description="Zone label of this process in the fleet view.")
    heartbeat_interval: float = Field(default=15.0, gt=0, description="Seconds between fleet heartbeats of "
                                      "servers, stream consumers and batch runs; stale after 3 missed.")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite:///{(self.home / 'registry.db').resolve()}"

    @property
    def resolved_artifact_root(self) -> Path:
        return (self.artifact_root or self.home / "artifacts").resolve()

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.home / "cache").resolve()

    @property
    def resolved_log_parquet_root(self) -> Path:
        return (self.log_parquet_root or self.resolved_artifact_root / "predictions").resolve()

    @property
    def resolved_spill_dir(self) -> Path:
        return (self.spill_dir or self.home / "spill").resolve()


def normalize_database_url(url: str) -> str:
    """Let users write ``postgresql://`` and still get the psycopg 3 driver we ship."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url
