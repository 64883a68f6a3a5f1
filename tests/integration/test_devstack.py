"""The local stack for real: the session fixtures, and `trace up | status | down` as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from devstack.anvil import AnvilSpec, rpc_chain_id, rpc_request
from devstack.process import free_port, pid_alive
from devstack.seaweedfs import BUCKETS, free_seaweedfs_ports
from devstack.tansu import ensure_topics
from tracekit.objects import S3Config
from tracekit.objects_open import open_object_store
from tracekit.objects_s3 import s3_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SLEEPER = [{"name": "sleeper", "argv": [sys.executable, "-c", "import time; time.sleep(3600)"]}]


# -- the session fixtures ----------------------------------------------------------------------------


def test_pg_url_is_migrated(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        versions = [r[0] for r in conn.execute("SELECT version FROM state.schema_migrations")]
        assert 1 in versions
        assert conn.execute("SELECT count(*) FROM state.follower_cursor").fetchone() == (0,)


def test_kafka_topics_can_be_created_and_listed(kafka_bootstrap: str) -> None:
    topics = {"it.localstack.one": 1, "it.localstack.three": 3}
    assert sorted(ensure_topics(kafka_bootstrap, topics, {"retention.ms": "600000"})) == sorted(topics)
    assert ensure_topics(kafka_bootstrap, topics) == []  # idempotent
    listed = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=5).topics
    assert {name: len(listed[name].partitions) for name in topics} == topics


def test_anvil_serves_its_chain_and_mines(anvil: AnvilSpec) -> None:
    assert rpc_chain_id(anvil.rpc_url) == anvil.chain_id == 10143
    first = int(rpc_request(anvil.rpc_url, "eth_blockNumber"), 16)
    time.sleep(1.0)
    assert int(rpc_request(anvil.rpc_url, "eth_blockNumber"), 16) > first
    assert anvil.ws_url.startswith("ws://127.0.0.1:")


def test_object_dir_is_writable(object_dir: Path) -> None:
    (object_dir / "probe.txt").write_text("ok")
    assert (object_dir / "probe.txt").read_text() == "ok"


def test_seaweedfs_has_the_buckets(s3_config: S3Config) -> None:
    assert set(BUCKETS) <= _buckets(s3_config)


def _buckets(config: S3Config) -> set[str]:
    return {str(b["Name"]) for b in s3_client(config).list_buckets()["Buckets"]}


# -- trace up | status | down ------------------------------------------------------------------------


@pytest.fixture
def home() -> Iterator[Path]:
    """A stack home reachable by uid 65534 (pytest's tmp_path is under a 0700 directory)."""
    root = Path(tempfile.mkdtemp(prefix="trace-home-"))
    root.chmod(0o755)
    try:
        yield root / "home"
    finally:
        trace("down", home=root / "home")
        shutil.rmtree(root, ignore_errors=True)


def trace(*args: str, home: Path, services: list[dict[str, Any]] | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    environ.update(env or {})
    environ.update(TRACE_HOME=str(home),
                   TRACE_STACK_SERVICES=json.dumps(SLEEPER if services is None else services))
    return subprocess.run([sys.executable, "-m", "devstack.cli", *args], env=environ,
                          capture_output=True, text=True, timeout=120, check=False)


def ports() -> dict[str, str]:
    weed = {f"TRACE_{'S3_PORT' if name == 's3_port' else 'SEAWEEDFS_' + name.upper()}": str(port)
            for name, port in free_seaweedfs_ports().items()}
    return {"TRACE_PG_PORT": str(free_port()), "TRACE_KAFKA_PORT": str(free_port()),
            "TRACE_ANVIL_PORT": str(free_port()), "TRACE_CHAIN_ID": "31337", **weed}


def external_s3(config: S3Config) -> dict[str, str]:
    """The session's SeaweedFS as an external S3 (so `up` starts none on the default ports)."""
    assert config.endpoint and config.access_key_id and config.secret_access_key
    return {"TRACE_S3_ENDPOINT": config.endpoint,
            "TRACE_S3_ACCESS_KEY_ID": config.access_key_id.get_secret_value(),
            "TRACE_S3_SECRET_ACCESS_KEY": config.secret_access_key.get_secret_value()}


def home_s3(home: Path, env: dict[str, str]) -> S3Config:
    """How to reach the SeaweedFS `up` started in ``home`` (credentials from its secrets.json)."""
    stored = json.loads((home / "secrets.json").read_text())
    return S3Config(endpoint=f"http://127.0.0.1:{env['TRACE_S3_PORT']}",
                    access_key_id=stored["s3_access_key_id"],
                    secret_access_key=stored["s3_secret_access_key"])


def test_up_status_up_down(home: Path) -> None:
    env = ports()
    first = trace("up", "--no-traffic", home=home, env=env)
    assert first.returncode == 0, first.stderr
    assert "started postgres, tansu, anvil, seaweedfs, supervisor" in first.stdout

    status = trace("status", "--json", home=home)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    services = doc["services"]
    assert {n: services[n]["healthy"] for n in services} == dict.fromkeys(
        ["postgres", "kafka", "rpc", "s3", "objects", "supervisor", "sleeper"], True)
    assert services["postgres"]["url"] == f"postgresql://postgres@127.0.0.1:{env['TRACE_PG_PORT']}/postgres"
    assert services["s3"]["url"] == f"http://127.0.0.1:{env['TRACE_S3_PORT']}"
    s3 = home_s3(home, env)
    assert set(BUCKETS) <= _buckets(s3)
    kept = open_object_store("s3://datasets/it", s3)
    kept.put("kept.txt", b"survives down and up")
    chain = doc["chains"]["31337"]
    assert chain["head"] >= 0 and chain["cursor"] is None and chain["reorgs"] == 0
    assert chain["hot_rows"] == {"blocks": 0, "transactions": 0, "logs": 0}
    pids = {n: e["pid"] for n, e in services.items() if e["pid"] is not None}
    rpc_url = f"http://127.0.0.1:{env['TRACE_ANVIL_PORT']}"
    chain_hash = rpc_request(rpc_url, "eth_getBlockByNumber", hex(chain["head"]), False)["hash"]
    assert set(pids) == {"postgres", "kafka", "rpc", "s3", "supervisor", "sleeper"}

    second = trace("up", "--no-traffic", home=home, env=env)
    assert second.returncode == 0, second.stderr
    assert "already running postgres, tansu, anvil, seaweedfs, supervisor" in second.stdout
    again = json.loads(trace("status", "--json", home=home).stdout)["services"]
    assert {n: e["pid"] for n, e in again.items() if e["pid"] is not None} == pids

    stopped = trace("down", home=home)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "stopped: supervisor, anvil, tansu, seaweedfs, postgres"
    assert not [n for n, pid in pids.items() if pid_alive(pid)]
    assert not json.loads(trace("status", "--json", home=home).stdout)["services"]["s3"]["healthy"]
    assert list((home / "run").glob("*.pid")) == []
    assert trace("down", home=home).stdout.strip() == "nothing was running"

    # up again: the same chain (anvil wrote it on SIGTERM) and the same database
    assert (home / "data" / "anvil" / "31337.json").exists()
    old_head = chain["head"]
    again_up = trace("up", "--no-traffic", home=home, env=env)
    assert again_up.returncode == 0, again_up.stderr
    revived = json.loads(trace("status", "--json", home=home).stdout)["chains"]["31337"]
    assert revived["head"] >= old_head
    assert rpc_request(rpc_url, "eth_getBlockByNumber", hex(old_head), False)["hash"] == chain_hash
    assert kept.get("kept.txt") == b"survives down and up"  # SeaweedFS keeps its objects
    purged = trace("down", "--purge", home=home)
    assert purged.stdout.splitlines() == ["stopped: supervisor, anvil, tansu, seaweedfs, postgres",
                                          f"deleted the data, logs and state in {home}"]
    assert not home.exists()


def test_external_services_are_used_and_left_alone(home: Path, pg_url: str, kafka_bootstrap: str,
                                                   anvil: AnvilSpec, s3_config: S3Config) -> None:
    env = {"TRACE_DATABASE_URL": pg_url, "TRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "TRACE_RPC_URL": anvil.rpc_url, "TRACE_CHAIN_ID": str(anvil.chain_id),
           "TRACE_OBJECT_STORE": "s3://results/it-external", **external_s3(s3_config)}
    result = trace("up", home=home, env=env)
    assert result.returncode == 0, result.stderr
    assert "started supervisor" in result.stdout and "external postgres, kafka, rpc, s3" in result.stdout
    doc = json.loads(trace("status", "--json", home=home).stdout)  # settings come from the last up
    assert doc["services"]["rpc"]["url"] == anvil.rpc_url and doc["services"]["rpc"]["pid"] is None
    assert doc["services"]["s3"] == {"url": s3_config.endpoint, "pid": None, "healthy": None, "restarts": 0}
    assert doc["services"]["objects"]["url"] == "s3://results/it-external"
    assert doc["services"]["objects"]["healthy"] is True
    assert str(anvil.chain_id) in doc["chains"]
    assert trace("down", home=home).stdout.strip() == "stopped: supervisor"
    with psycopg.connect(pg_url) as conn:  # the external database still runs
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert rpc_chain_id(anvil.rpc_url) == anvil.chain_id


def test_port_in_use_is_one_clear_line(home: Path) -> None:
    env = ports()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["TRACE_PG_PORT"])))
        squatter.listen()
        result = trace("up", home=home, env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: postgres: port 127.0.0.1:{env['TRACE_PG_PORT']} is already in use; stop what holds it "
        "or choose another port (see `trace up --help`)"]


def test_wrong_chain_id_is_a_chain_mismatch(home: Path, pg_url: str, kafka_bootstrap: str,
                                            anvil: AnvilSpec) -> None:
    result = trace("up", home=home, env={
        "TRACE_DATABASE_URL": pg_url, "TRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRACE_RPC_URL": anvil.rpc_url, "TRACE_CHAIN_ID": "31337"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: chain id mismatch: node at {anvil.rpc_url} serves 10143, configured 31337 "
        "(set TRACE_CHAIN_ID)"]


def test_unreachable_external_services_are_one_line(home: Path, pg_url: str) -> None:
    dead = free_port()
    broker = trace("up", home=home, env={"TRACE_DATABASE_URL": pg_url,
                                         "TRACE_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}"})
    assert broker.stderr.splitlines() == [f"error: kafka: broker at 127.0.0.1:{dead} is unreachable"]
    database = trace("up", home=home, env={"TRACE_DATABASE_URL": f"postgresql://u:secret@127.0.0.1:{dead}/x"})
    assert database.returncode == 1 and len(database.stderr.splitlines()) == 1
    assert database.stderr.startswith(f"error: postgres: cannot connect to postgresql://u:***@127.0.0.1:{dead}/x")


def test_a_malformed_object_store_url_is_one_line_and_starts_nothing(home: Path) -> None:
    result = trace("up", home=home, env={**ports(), "TRACE_OBJECT_STORE": "s3://"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: object store URL 's3://' has no bucket; use s3://BUCKET[/PREFIX], file:///DIR or a "
        "directory path"]
    assert not home.exists()


def test_bad_external_s3_is_one_line(home: Path, pg_url: str, kafka_bootstrap: str, anvil: AnvilSpec,
                                     s3_config: S3Config) -> None:
    """An unreachable endpoint, a missing bucket, wrong credentials: `up` stops with one line each,
    and creates no bucket."""
    env = {"TRACE_DATABASE_URL": pg_url, "TRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "TRACE_RPC_URL": anvil.rpc_url, "TRACE_CHAIN_ID": str(anvil.chain_id), **external_s3(s3_config),
           "TRACE_OBJECT_STORE": "s3://datasets/it"}
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        ({"TRACE_S3_ENDPOINT": dead}, f"object store: cannot reach S3 at {dead} (Connection refused)"),
        ({"TRACE_OBJECT_STORE": "s3://trace-missing"},
         f"object store: bucket trace-missing does not exist at {s3_config.endpoint}"),
        ({"TRACE_S3_SECRET_ACCESS_KEY": "wrong"},
         f"object store: S3 at {s3_config.endpoint} rejected the credentials (SignatureDoesNotMatch); "
         "check TRACE_S3_ACCESS_KEY_ID and TRACE_S3_SECRET_ACCESS_KEY"),
    ]
    before = _buckets(s3_config)
    for change, message in cases:
        result = trace("up", home=home, env={**env, **change})
        assert result.returncode == 1
        assert result.stderr.splitlines() == [f"error: {message}"]
        assert not (home / "run" / "supervisor.pid").exists()
    assert _buckets(s3_config) == before


def test_crashing_service_fails_up_and_down_cleans_up(home: Path, pg_url: str, kafka_bootstrap: str,
                                                      anvil: AnvilSpec, s3_config: S3Config) -> None:
    crasher = [{"name": "crasher", "argv": [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]}]
    env = {"TRACE_DATABASE_URL": pg_url, "TRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "TRACE_RPC_URL": anvil.rpc_url, "TRACE_CHAIN_ID": str(anvil.chain_id), **external_s3(s3_config)}
    result = trace("up", home=home, services=crasher, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: crasher keeps exiting (exit code 3, 3 restarts): boom (log: ")
    assert trace("down", home=home).stdout.strip() == "stopped: supervisor"


def test_down_stops_children_of_a_killed_supervisor(home: Path, pg_url: str, kafka_bootstrap: str,
                                                    anvil: AnvilSpec, s3_config: S3Config) -> None:
    env = {"TRACE_DATABASE_URL": pg_url, "TRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "TRACE_RPC_URL": anvil.rpc_url, "TRACE_CHAIN_ID": str(anvil.chain_id), **external_s3(s3_config)}
    assert trace("up", home=home, env=env).returncode == 0
    supervisor = int((home / "run" / "supervisor.pid").read_text().split()[0])
    sleeper = int((home / "run" / "sleeper.pid").read_text().split()[0])
    os.kill(supervisor, 9)
    deadline = time.monotonic() + 5
    while pid_alive(supervisor) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_alive(sleeper)
    assert trace("down", home=home).stdout.strip() == "stopped: sleeper"
    assert not pid_alive(sleeper)


def test_a_chain_the_node_does_not_have_is_one_clear_line(home: Path, pg_url: str, kafka_bootstrap: str,
                                                         anvil: AnvilSpec) -> None:
    """Postgres holds a follower window the node does not contain (an anvil that lost its chain)."""
    bogus = "0x" + "de" * 32
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO state.follower_window (chain_id, block_number, block_hash, parent_hash)"
                     " VALUES (%s, 1, %s, %s)", (anvil.chain_id, bogus, bogus))
    try:
        result = trace("up", home=home, env={
            "TRACE_DATABASE_URL": pg_url, "TRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "TRACE_RPC_URL": anvil.rpc_url, "TRACE_CHAIN_ID": str(anvil.chain_id)})
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DELETE FROM state.follower_window WHERE chain_id = %s", (anvil.chain_id,))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: rpc: block 1 (0xdedededede...) that the follower emitted for chain {anvil.chain_id} is "
        f"not on the node: the node at {anvil.rpc_url} does not have it; `trace down --purge` starts over"]


def test_home_under_a_closed_directory_still_runs_postgres(tmp_path: Path) -> None:
    """A clone under /root (0700) must work: Postgres data and log move under /var/tmp."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    home = closed / "home"
    try:
        up = trace("up", "--no-traffic", home=home, env=ports())
        assert up.returncode == 0, up.stderr
        services = json.loads(trace("status", "--json", home=home).stdout)["services"]
        assert services["postgres"]["healthy"] is True
        assert (home / "logs" / "postgres.log").is_symlink()
        assert "database system is ready" in (home / "logs" / "postgres.log").read_text()
    finally:
        assert trace("down", "--purge", home=home).returncode == 0
    assert not (home / "logs").exists()


def test_up_with_no_supervised_services(home: Path) -> None:
    up = trace("up", "--no-traffic", home=home, env=ports(), services=[])
    assert up.returncode == 0, up.stderr
    assert "started postgres, tansu, anvil, seaweedfs, supervisor" in up.stdout
