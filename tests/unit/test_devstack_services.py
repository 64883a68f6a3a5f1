"""Config -> the supervised service list and the environment its children get."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from devstack.services import (
    SERVICES_ENV,
    ServiceSpec,
    child_env,
    default_services,
    services_from_json,
    supervised_services,
)
from devstack.stack import stack_topics, up
from tracekit.config import Settings
from tracekit.errors import ConfigError


def test_default_services_with_traffic_on_the_embedded_anvil(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, traffic_tx_per_block=7, reorg_every=5.0, reorg_min_depth=2,
                        reorg_max_depth=4)
    services = {s.name: s for s in default_services(settings)}
    assert list(services) == ["follower", "sink", "alerts", "enrich", "transfer-sink", "dispatcher", "worker",
                              "traffic"]
    assert services["dispatcher"].argv[3:] == ("dispatcher", "run")
    assert services["dispatcher"].ready_url == f"http://127.0.0.1:{settings.api_port}/openapi.json"
    assert services["worker"].argv[3:] == ("worker", "run")
    assert services["follower"].argv == (sys.executable, "-m", "tracecli", "follower", "run")
    assert services["sink"].argv == (sys.executable, "-m", "tracecli", "sink", "run")
    assert services["traffic"].argv[3:] == (
        "devchain", "traffic", "--tx-per-block", "7", "--reorg-every", "5.0",
        "--reorg-min-depth", "2", "--reorg-max-depth", "4",
        "--state-file", str(tmp_path.resolve() / "data" / "devchain" / "10143.json"))
    assert services["follower"].ports == (settings.follower_metrics_port,)
    assert services["sink"].ports == (settings.sink_metrics_port, settings.sink_web_port)
    assert services["follower"].ready_url == f"http://127.0.0.1:{settings.follower_metrics_port}/metrics"
    assert services["sink"].ready_url == f"http://127.0.0.1:{settings.sink_metrics_port}/metrics"
    assert services["transfer-sink"].argv[3:] == ("transfer-sink", "run")
    assert services["transfer-sink"].ports == (settings.transfer_sink_metrics_port,
                                               settings.transfer_sink_web_port)
    assert services["transfer-sink"].ready_url == (
        f"http://127.0.0.1:{settings.transfer_sink_metrics_port}/metrics")
    assert services["traffic"].ready_url is None


@pytest.mark.parametrize("settings", [
    Settings(traffic=False),
    Settings(rpc_url="http://node.example:8545"),  # never generate traffic on an external node
])
def test_no_traffic_service(settings: Settings) -> None:
    names = [s.name for s in default_services(settings)]
    assert names == ["follower", "sink", "alerts", "enrich", "transfer-sink", "dispatcher", "worker"]


def test_child_env_carries_the_resolved_endpoints(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", pg_port=6001, kafka_port=6002, anvil_port=6003, chain_id=7)
    env = child_env(settings)
    assert env["TRACE_DATABASE_URL"] == "postgresql://postgres@127.0.0.1:6001/postgres"
    assert env["TRACE_KAFKA_BOOTSTRAP"] == "127.0.0.1:6002"
    assert env["TRACE_RPC_URL"] == "http://127.0.0.1:6003"
    assert env["TRACE_WS_URL"] == "ws://127.0.0.1:6003"
    assert env["TRACE_CHAIN_ID"] == "7"
    assert env["TRACE_HOME"] == str((tmp_path / "h").resolve())
    assert env["TRACE_OBJECT_STORE"] == "s3://datasets"  # the embedded SeaweedFS's bucket
    assert env["TRACE_TRAFFIC"] == "true"
    assert "TRACE_SCHEMA_REGISTRY_URL" not in env  # unset settings stay unset
    assert env["TRACE_FINALIZE_BATCH_BLOCKS"] == "100"  # the short dev chain goes cold in small batches
    assert child_env(Settings(finalize_batch_blocks=500))["TRACE_FINALIZE_BATCH_BLOCKS"] == "500"


def test_child_env_with_external_services() -> None:
    env = child_env(Settings(database_url=SecretStr("postgresql://u:pw@db/x"), rpc_url="http://n:1"))
    assert env["TRACE_DATABASE_URL"] == "postgresql://u:pw@db/x"
    assert env["TRACE_RPC_URL"] == "http://n:1"
    assert "TRACE_WS_URL" not in env  # an external node without TRACE_WS_URL: poll
    assert env["TRACE_FINALIZE_BATCH_BLOCKS"] == "10000"


def test_children_environment_round_trips_through_settings(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(home=tmp_path, chain_id=31337, reorg_every=2.5, traffic=False)
    for name, value in child_env(original).items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.chain_id == 31337 and child.reorg_every == 2.5 and child.traffic is False
    assert child.resolved_database_url == original.resolved_database_url
    assert child.resolved_rpc_url == original.resolved_rpc_url


def test_override_from_json(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    specs = services_from_json('[{"name": "s", "argv": ["sleep", "9"], "env": {"X": "1"}}]', settings)
    assert [(s.name, s.argv) for s in specs] == [("s", ("sleep", "9"))]
    assert specs[0].env["X"] == "1" and specs[0].env["TRACE_RPC_URL"] == settings.resolved_rpc_url
    assert services_from_json("[]", settings) == []
    assert supervised_services(settings, {SERVICES_ENV: "[]"}) == []
    expected = ["follower", "sink", "alerts", "enrich", "transfer-sink", "dispatcher", "worker", "traffic"]
    assert [s.name for s in supervised_services(settings, {})] == expected


@pytest.mark.parametrize("text", ["{", '{"name": "x"}', '[{"argv": []}]',
                                  '[{"name": "a", "argv": []}, {"name": "a", "argv": []}]'])
def test_bad_override_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=SERVICES_ENV):
        services_from_json(text, Settings())


def test_spec_json_round_trip() -> None:
    spec = ServiceSpec("x", ("a", "b"), {"K": "V"}, ports=(1, 2), ready_url="tcp://127.0.0.1:1")
    assert ServiceSpec.from_json(spec.to_json()) == spec


def test_reserved_service_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'postgres' is reserved"):
        up(Settings(home=tmp_path), services=[ServiceSpec("postgres", ("true",))])
    assert not (tmp_path / "run").exists()  # refused before anything started


def test_topics_are_precreated_with_one_partition() -> None:
    assert stack_topics(Settings(chain_id=10143)) == {"trace.chain.10143.blocks": 1,
                                                      "trace.chain.10143.blocks.dlq": 1}


def test_delivery_job_and_api_join_when_configured(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    settings = Settings(home=tmp_path / "home", alert_routes=routes, api_token="t0ken")
    specs = {s.name: s for s in default_services(settings)}
    assert list(specs) == ["follower", "sink", "alerts", "enrich", "transfer-sink", "alert-route",
                           "dispatcher", "worker", "traffic"]
    assert specs["alert-route"].argv[-2:] == ("--routes", str(routes.resolve()))
    assert specs["dispatcher"].ports == (settings.api_port, settings.dispatcher_metrics_port)
