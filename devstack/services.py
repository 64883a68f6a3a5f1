"""Trace's own services run under the supervisor: the ONE place that lists them.

To add a service, add a :class:`ServiceSpec` in :func:`default_services`. Children get the resolved
settings as ``TRACE_*`` variables (:func:`child_env`), with the URLs of the running stack, so they
never start anything themselves.

For tests and experiments, ``TRACE_STACK_SERVICES`` replaces the list with a JSON array of
``{"name": ..., "argv": [...], "env": {...}}`` (``[]`` = no supervised services).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tracekit.config import Settings
from tracekit.errors import ConfigError

SERVICES_ENV = "TRACE_STACK_SERVICES"
DEV_FINALIZE_BATCH_BLOCKS = 100  # the embedded dev chain's finalization batches (default: 10,000)


@dataclass(frozen=True)
class ServiceSpec:
    """A supervised child: ``argv`` run with ``env`` added to the supervisor's environment.

    ``ports`` are checked free before the supervisor starts it; ``ready_url`` (``http://`` or
    ``tcp://host:port``), when given, must answer before ``up`` calls the service healthy.
    """

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    ready_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "argv": list(self.argv), "env": dict(self.env),
                "ports": list(self.ports), "ready_url": self.ready_url}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceSpec:
        return cls(
            name=str(data["name"]),
            argv=tuple(str(a) for a in data["argv"]),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
            ports=tuple(int(p) for p in data.get("ports") or ()),
            ready_url=data.get("ready_url"),
        )


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value.expanduser().resolve())
    return str(value)


def child_env(settings: Settings) -> dict[str, str]:
    """Every setting as ``TRACE_*``, with the stack's resolved endpoints filled in."""
    env = {f"TRACE_{name.upper()}": _env_value(getattr(settings, name))
           for name in type(settings).model_fields if getattr(settings, name) is not None}
    env["TRACE_DATABASE_URL"] = settings.resolved_database_url
    env["TRACE_KAFKA_BOOTSTRAP"] = settings.resolved_kafka_bootstrap
    env["TRACE_RPC_URL"] = settings.resolved_rpc_url
    ws_url = settings.resolved_ws_url
    if ws_url is not None:
        env["TRACE_WS_URL"] = ws_url
    env["TRACE_OBJECT_STORE"] = settings.resolved_object_store
    if settings.start_block is None and settings.rpc_url is None:
        env["TRACE_START_BLOCK"] = "0"  # the embedded dev chain is short: follow it from genesis
    if settings.rpc_url is None and "finalize_batch_blocks" not in settings.model_fields_set:
        env["TRACE_FINALIZE_BATCH_BLOCKS"] = str(DEV_FINALIZE_BATCH_BLOCKS)  # see a short chain go cold
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "tracecli", *args)


def default_services(settings: Settings) -> list[ServiceSpec]:
    """follower, sink, alerts, enrich, transfer-sink, (alert-route,) dispatcher, worker, and the
    dev-chain traffic generator when it drives the embedded anvil."""
    env = child_env(settings)
    metrics = f"http://{settings.host}:{{}}/metrics"
    services = [
        ServiceSpec("follower", _cli("follower", "run"), env, ports=(settings.follower_metrics_port,),
                    ready_url=metrics.format(settings.follower_metrics_port)),
        ServiceSpec("sink", _cli("sink", "run"), env,
                    ports=(settings.sink_metrics_port, settings.sink_web_port),
                    ready_url=metrics.format(settings.sink_metrics_port)),
    ]
    services.append(ServiceSpec("alerts", _cli("alerts", "run"), env,
                                ports=(settings.alerts_metrics_port, settings.alerts_web_port),
                                ready_url=metrics.format(settings.alerts_metrics_port)))
    services.append(ServiceSpec("enrich", _cli("enrich", "run"), env, ports=(settings.enrich_web_port,)))
    services.append(ServiceSpec("transfer-sink", _cli("transfer-sink", "run"), env,
                                ports=(settings.transfer_sink_metrics_port, settings.transfer_sink_web_port),
                                ready_url=metrics.format(settings.transfer_sink_metrics_port)))
    if settings.alert_routes is not None:
        services.append(ServiceSpec("alert-route", _cli(
            "alerts-route", "run", "--routes", str(settings.alert_routes.resolve())), env))
    # the dispatcher (HTTP API, wake-up publisher, lease reaper) and a worker for batch tasks
    services.append(ServiceSpec("dispatcher", _cli("dispatcher", "run"), env,
                                ports=(settings.api_port, settings.dispatcher_metrics_port),
                                ready_url=f"http://{settings.host}:{settings.api_port}/openapi.json"))
    services.append(ServiceSpec("worker", _cli("worker", "run"), env))
    if settings.traffic and settings.rpc_url is None:
        services.append(ServiceSpec("traffic", _cli(
            "devchain", "traffic",
            "--tx-per-block", str(settings.traffic_tx_per_block),
            "--reorg-every", str(settings.reorg_every),
            "--reorg-min-depth", str(settings.reorg_min_depth),
            "--reorg-max-depth", str(settings.reorg_max_depth),
            # the contracts live on the embedded chain, which survives `down`: reuse them
            "--state-file", str(settings.home.resolve() / "data" / "devchain" / f"{settings.chain_id}.json"),
        ), env))
    return services


def services_from_json(text: str, settings: Settings) -> list[ServiceSpec]:
    """Parse a ``TRACE_STACK_SERVICES`` value; each service gets :func:`child_env` plus its own env."""
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise TypeError("not a JSON array")
        base = child_env(settings)
        specs = [ServiceSpec.from_json(item) for item in items]
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{SERVICES_ENV} must be a JSON array of {{name, argv, env}}: {exc}") from exc
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{SERVICES_ENV}: service names must be unique")
    return [ServiceSpec(s.name, s.argv, {**base, **s.env}, s.ports, s.ready_url) for s in specs]


def supervised_services(settings: Settings, environ: Mapping[str, str] | None = None) -> list[ServiceSpec]:
    """The services ``up`` supervises: ``TRACE_STACK_SERVICES`` when set, else the defaults."""
    override = (os.environ if environ is None else environ).get(SERVICES_ENV)
    if override is not None:
        return services_from_json(override, settings)
    return default_services(settings)
