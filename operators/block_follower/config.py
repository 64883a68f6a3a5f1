"""The block follower's frozen config, built from :class:`~tracekit.config.Settings` by its CLI."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tracekit.config import Settings
from tracekit.names import blocks_topic


class FollowerConfig(BaseModel):
    """What the block follower needs; built by the CLI, never read from the environment."""

    model_config = ConfigDict(frozen=True)

    chain_id: int
    rpc_url: str
    ws_url: str | None = None
    kafka_bootstrap: str
    schema_registry_url: str | None = None
    database_url: SecretStr
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    window: int = Field(128, description="Canonical blocks kept to detect reorgs")
    batch_size: int = Field(50, description="Blocks fetched per JSON-RPC batch while catching up")
    poll_interval: float = Field(0.05, description="Head polling interval when no WebSocket")
    start_block: int | None = Field(None, description="First block when no cursor exists")

    @property
    def topic(self) -> str:
        return blocks_topic(self.chain_id)

    @classmethod
    def from_settings(cls, settings: Settings) -> FollowerConfig:
        return cls(
            chain_id=settings.chain_id,
            rpc_url=settings.resolved_rpc_url,
            ws_url=settings.resolved_ws_url,
            kafka_bootstrap=settings.resolved_kafka_bootstrap,
            schema_registry_url=settings.schema_registry_url,
            database_url=SecretStr(settings.resolved_database_url),
            metrics_host=settings.host,
            metrics_port=settings.follower_metrics_port,
            start_block=settings.start_block,
        )
