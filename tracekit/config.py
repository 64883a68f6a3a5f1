"""Settings read from the environment (``TRACE_*``) by the CLI entry point only.

Libraries and services take the explicit, frozen config objects each component's CLI builds
from these settings (``operators/block_follower/config.py``, ``streams/config.py``...), never the
environment. Any external service given here (``TRACE_DATABASE_URL``, ``TRACE_KAFKA_BOOTSTRAP``,
``TRACE_RPC_URL``, ``TRACE_S3_ENDPOINT``) replaces the embedded one that ``trace up`` would
otherwise start.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracekit.errors import ConfigError, first_problem
from tracekit.names import ALERTS_TOPIC
from tracekit.objects import S3Config

MONAD_TESTNET_CHAIN_ID = 10143
DEFAULT_OBJECT_STORE = "s3://datasets"


class Settings(BaseSettings):
    """Everything a Trace process can be told from outside. Env vars are ``TRACE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="TRACE_", frozen=True, extra="ignore")

    home: Path = Field(Path(".trace"), description="State, data and logs of the local stack")
    host: str = Field("127.0.0.1", description="Address every embedded service binds to")
    chain_id: int = Field(MONAD_TESTNET_CHAIN_ID, description="Chain id the follower expects")
    block_time: float = Field(0.4, description="Block time of the embedded anvil, seconds")

    pg_port: int = Field(55432, description="Port of the embedded Postgres")
    kafka_port: int = Field(19092, description="Port of the embedded broker (tansu)")
    anvil_port: int = Field(18545, description="Port of the embedded anvil (HTTP and WebSocket)")
    follower_metrics_port: int = Field(19101, description="Prometheus port of the follower")
    sink_metrics_port: int = Field(19102, description="Prometheus port of the hot-table sink")
    sink_web_port: int = Field(16066, description="Faust web port of the hot-table sink")

    alerts_metrics_port: int = Field(19103, description="Prometheus port of the alert evaluator")
    alerts_web_port: int = Field(16067, description="Faust web port of the alert evaluator")
    enrich_web_port: int = Field(16068, description="Faust web port of the enrichment worker")
    transfer_sink_metrics_port: int = Field(
        19104, description="Prometheus port of the transfer sink (hot.transfers, hot.stake_changes)")
    transfer_sink_web_port: int = Field(16069, description="Faust web port of the transfer sink")
    api_port: int = Field(18080, description="Port of the HTTP API")
    dispatcher_metrics_port: int = Field(19105, description="Prometheus port of the dispatcher (0: none)")
    api_token: SecretStr | None = Field(
        None, description="Bearer token of the HTTP API (default: generated into HOME/secrets.json)")
    worker_token: SecretStr | None = Field(
        None, description="Credential workers fetch tasks with (default: generated into HOME/secrets.json)")
    dispatcher_secret: SecretStr | None = Field(
        None, description="HMAC key of per-task tokens (default: generated into HOME/secrets.json)")
    dispatcher_url: str | None = Field(None, description="The dispatcher's API (default: this host's)")
    org_id: str = Field("default", description="Organisation the dispatcher serves")
    queue: Literal["pg", "kafka"] = Field("pg", description="Wake-up queue: Postgres table or Kafka topic")
    worker_slots: int = Field(4, ge=1, le=256, description="Tasks one worker runs at once")
    lease_seconds: float = Field(30.0, gt=1, le=3600, description="Task lease; heartbeats every third")
    integrity_samples: int = Field(
        5, ge=0, le=1000, description="Heights of each committed range compared with the node (0: none)")
    dataset_versions_kept: int = Field(
        5, ge=1, le=1000, description="Retention: the versions the newest N pointer sets name are kept "
        "(rollback can restore those sets); older versions expire and their files are deleted by gc")
    staging_retention_hours: float = Field(
        24.0, gt=0, description="gc deletes an orphaned staging file (no version or pending run uses it) "
        "this many hours after its run ended")
    gc_every_minutes: float = Field(
        60.0, gt=0, description="Minutes between the dispatcher's gc passes (with a warehouse); by hand: "
        "`trace datasets gc`")
    finalize_batch_blocks: int = Field(
        10_000, ge=1, le=10_000_000, description="Finalization: blocks per batch the dispatcher moves from "
        "the hot tables into the cold ones, whole aligned ranges (the embedded dev chain: 100)")
    finalize_overlap_blocks: int = Field(
        100, ge=0, description="Finalization: blocks at and below the cold watermark kept in the hot tables "
        "after their batch is cut over")
    finalize_every_seconds: float = Field(
        5.0, gt=0, description="Seconds between the dispatcher's looks for a final batch (with a warehouse)")
    alert_routes: Path | None = Field(None, description="Routes YAML of the alert delivery job")
    finality_depth: int = Field(10, description="Blocks after which a block counts as final")
    alerts_topic: str = Field(ALERTS_TOPIC, description="Topic alerts and retractions go to")
    token_decimals: str = Field(
        "", description="Comma-separated TOKEN=DECIMALS for USD values (the dev chain's token is known)"
    )
    staking_contracts: str = Field(
        "", description="Comma-separated staking contracts whose Delegated/Undelegated logs are decoded "
        "(the dev chain's is found in its deployment file)"
    )

    database_url: SecretStr | None = Field(None, description="External Postgres (replaces embedded)")
    kafka_bootstrap: str | None = Field(None, description="External Kafka API (replaces tansu)")
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry; without it messages use Avro "
        "single-object encoding"
    )
    rpc_url: str | None = Field(None, description="External JSON-RPC URL (replaces anvil)")
    ws_url: str | None = Field(None, description="External WebSocket URL for newHeads")
    object_store: str | None = Field(
        None, description="Object store: s3://BUCKET, s3://BUCKET/PREFIX, file:///DIR or a directory "
        "(default: s3://datasets, the embedded SeaweedFS's bucket, or TRACE_S3_ENDPOINT's)")

    s3_port: int = Field(18333, ge=1, le=55535,
                         description="S3 port of the embedded SeaweedFS (its gRPC port is this + 10000)")
    seaweedfs_master_port: int = Field(
        18334, ge=1, le=55535, description="Port of the embedded SeaweedFS master (gRPC: + 10000)")
    seaweedfs_volume_port: int = Field(
        18335, ge=1, le=55535, description="Port of the embedded SeaweedFS volume server (gRPC: + 10000)")
    seaweedfs_filer_port: int = Field(
        18336, ge=1, le=55535, description="Port of the embedded SeaweedFS filer (gRPC: + 10000)")
    seaweedfs_admin_port: int = Field(
        18337, ge=1, le=55535, description="Port of the embedded SeaweedFS admin server (gRPC: + 10000)")
    s3_endpoint: str | None = Field(
        None, description="External S3 endpoint, e.g. http://minio:9000 or "
        "https://s3.eu-west-1.amazonaws.com (replaces the embedded SeaweedFS; default: the embedded one)")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: SecretStr | None = Field(
        None, description="S3 access key id (default: generated into HOME/secrets.json for the embedded "
        "SeaweedFS; for an external endpoint, boto3's default credential chain)")
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret access key (default: as TRACE_S3_ACCESS_KEY_ID)")

    start_block: int | None = Field(
        None, description="First block the follower emits when it has no cursor (default: the head)"
    )
    traffic: bool = Field(True, description="Run the dev-chain traffic generator under `up`")
    traffic_tx_per_block: int = Field(20, description="Transactions per block the generator aims at")
    reorg_every: float = Field(0.0, description="Seconds between injected reorgs (0 = none)")
    reorg_min_depth: int = Field(1, description="Smallest injected reorg depth")
    reorg_max_depth: int = Field(3, description="Largest injected reorg depth")

    # -- resolved endpoints -------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"postgresql://postgres@{self.host}:{self.pg_port}/postgres"

    @property
    def resolved_kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"

    @property
    def resolved_rpc_url(self) -> str:
        return self.rpc_url or f"http://{self.host}:{self.anvil_port}"

    @property
    def resolved_ws_url(self) -> str | None:
        if self.ws_url:
            return self.ws_url
        if self.rpc_url is None:
            return f"ws://{self.host}:{self.anvil_port}"
        return None

    @property
    def resolved_object_store(self) -> str:
        """``TRACE_OBJECT_STORE``, else the bucket ``datasets`` of the S3 that ``s3_config`` reaches
        (the embedded SeaweedFS unless ``TRACE_S3_ENDPOINT`` names another)."""
        return self.object_store or DEFAULT_OBJECT_STORE

    @property
    def resolved_s3_endpoint(self) -> str:
        return self.s3_endpoint or f"http://{self.host}:{self.s3_port}"

    def s3_config(self, *, create_secrets: bool = True) -> S3Config:
        """How to reach S3: the external endpoint with the given credentials, or the embedded
        SeaweedFS with credentials from ``TRACE_S3_*`` or else ``HOME/secrets.json`` (generated
        there once; with ``create_secrets=False`` a missing one is a ConfigError instead)."""
        given = {"s3_access_key_id": self.s3_access_key_id, "s3_secret_access_key": self.s3_secret_access_key}
        if self.s3_endpoint is None and any(v is None for v in given.values()):
            path = self.home / "secrets.json"
            stored = _load_or_create_secrets(path, list(given)) if create_secrets else _read_secrets(path)
            missing = [k for k, v in given.items() if v is None and not stored.get(k)]
            if missing:
                raise ConfigError(f"no S3 credentials in {path} yet (run `trace up`) "
                                  f"or TRACE_{missing[0].upper()}")
            given = {k: v if v is not None else SecretStr(stored[k]) for k, v in given.items()}
        for key, value in given.items():
            if value is not None and not value.get_secret_value():
                raise ConfigError(f"TRACE_{key.upper()} is empty")
        return S3Config(endpoint=self.resolved_s3_endpoint, region=self.s3_region,
                        access_key_id=given["s3_access_key_id"],
                        secret_access_key=given["s3_secret_access_key"])

    @property
    def resolved_dispatcher_url(self) -> str:
        return self.dispatcher_url or f"http://{self.host}:{self.api_port}"

    def credentials(self) -> Credentials:
        """The API token, worker token and task-token key: from ``TRACE_*`` when set, else from
        ``HOME/secrets.json`` (created once, mode 0600), so every local process agrees."""
        given = {"api_token": self.api_token, "worker_token": self.worker_token,
                 "dispatcher_secret": self.dispatcher_secret}
        stored: dict[str, str] = {}
        if any(v is None for v in given.values()):
            stored = _load_or_create_secrets(self.home / "secrets.json", list(given))
        values = {k: v.get_secret_value() if v is not None else str(stored.get(k, ""))
                  for k, v in given.items()}
        for key, value in values.items():
            if not value:
                raise ValueError(f"TRACE_{key.upper()} is empty")
        return Credentials(api_token=values["api_token"], worker_token=values["worker_token"],
                           task_secret=values["dispatcher_secret"].encode())

def _new_secret(key: str) -> str:
    if key == "s3_access_key_id":  # S3 access key ids are short and alphanumeric
        return "TRACE" + secrets.token_hex(8).upper()
    return secrets.token_urlsafe(32)


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in dict(data).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable secrets file ({exc}); delete it to regenerate") from exc


def _load_or_create_secrets(path: Path, keys: list[str]) -> dict[str, str]:
    """The secrets in ``path``, each of ``keys`` generated once when missing: the file is created
    (mode 0600) or gains the new keys, keeping the others, under a lock, replaced atomically, so
    concurrent processes agree on every value."""
    stored = _read_secrets(path)
    if all(stored.get(key) for key in keys):
        return stored
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = _read_secrets(path)  # another process may have added them meanwhile
        missing = [key for key in keys if not stored.get(key)]
        if missing:
            stored.update({key: _new_secret(key) for key in missing})
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(stored, f)
            tmp.replace(path)
    return stored


class Credentials(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_token: str = Field(repr=False)
    worker_token: str = Field(repr=False)
    task_secret: bytes = Field(repr=False)


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``TRACE_*`` env vars, with the given overrides (those not None) taking
    precedence; an invalid value is one :class:`~tracekit.errors.ConfigError` line naming it."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        field, problem = first_problem(exc)
        raise ConfigError(f"invalid setting TRACE_{field.upper()}: {problem}") from exc
