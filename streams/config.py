"""Frozen configs of the Faust workers on a chain's topic, built from
:class:`~tracekit.config.Settings` by their CLIs (never from the environment)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tracekit.config import Settings
from tracekit.errors import ConfigError
from tracekit.names import ALERTS_TOPIC, blocks_topic


class SinkConfig(BaseModel):
    """What the Faust hot-table sink needs (and every worker on the chain's topic)."""

    model_config = ConfigDict(frozen=True)

    chain_id: int
    kafka_bootstrap: str
    schema_registry_url: str | None = None
    database_url: SecretStr
    web_host: str = "127.0.0.1"
    web_port: int = 16066
    metrics_port: int | None = None
    data_dir: Path = Path(".trace/faust")
    batch_max: int = 500
    batch_within: float = 0.02

    @property
    def topic(self) -> str:
        return blocks_topic(self.chain_id)

    @classmethod
    def from_settings(cls, settings: Settings) -> SinkConfig:
        return cls(
            chain_id=settings.chain_id,
            kafka_bootstrap=settings.resolved_kafka_bootstrap,
            schema_registry_url=settings.schema_registry_url,
            database_url=SecretStr(settings.resolved_database_url),
            web_host=settings.host,
            web_port=settings.sink_web_port,
            metrics_port=settings.sink_metrics_port,
            data_dir=settings.home / "faust",
        )


class AlertsConfig(SinkConfig):
    """What the alert evaluator (and enrichment) needs: the sink's settings plus finality, the
    alerts topic and what to decode."""

    finality_depth: int = 10
    alerts_topic: str = ALERTS_TOPIC
    staking_contracts: frozenset[str] = frozenset()
    token_decimals: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertsConfig:
        sink = SinkConfig.from_settings(settings)
        return cls(
            **{**sink.model_dump(), "web_port": settings.alerts_web_port,
               "metrics_port": settings.alerts_metrics_port, "data_dir": settings.home / "faust-alerts"},
            finality_depth=settings.finality_depth,
            alerts_topic=settings.alerts_topic,
            staking_contracts=staking_contracts(settings),
            token_decimals=token_decimals(settings),
        )


def _devchain_deployment(settings: Settings) -> dict[str, str]:
    deployment = settings.home / "data" / "devchain" / f"{settings.chain_id}.json"
    try:
        data = json.loads(deployment.read_text())
        return {"token": str(data["token"]).lower(), "staking": str(data["staking"]).lower()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def staking_contracts(settings: Settings) -> frozenset[str]:
    """``TRACE_STAKING_CONTRACTS`` plus the dev chain's staking contract, if deployed."""
    found = {a.strip().lower() for a in settings.staking_contracts.split(",") if a.strip()}
    if "staking" in (dev := _devchain_deployment(settings)):
        found.add(dev["staking"])
    return frozenset(found)


def token_decimals(settings: Settings) -> dict[str, int]:
    """``TRACE_TOKEN_DECIMALS`` plus the dev chain's token (18 decimals), if deployed."""
    decimals = {}
    if "token" in (dev := _devchain_deployment(settings)):
        decimals[dev["token"]] = 18
    for item in filter(None, (i.strip() for i in settings.token_decimals.split(","))):
        token, _, value = item.partition("=")
        if not value.strip().isdigit():
            raise ConfigError(f"TRACE_TOKEN_DECIMALS: {item!r} is not TOKEN=DECIMALS")
        decimals[token.strip().lower()] = int(value)
    return decimals
