"""Realtime alerting on the real stack: follower -> broker -> alert evaluator -> outbox -> topic.

Known transactions are sent on the dev chain (contracts deployed by the test), rules of each kind
are applied with `trace alerts apply`, and the alerts table and topic are checked.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from devstack.process import free_port
from operators.devchain.artifacts import staking_artifact, token_artifact
from operators.devchain.deploy import Deployment, deploy
from tests.integration.pipeline import Pipeline, make_pipeline, rpc
from tracekit.avro.wire import AvroCodec
from tracekit.jsonrpc import RpcClient

pytestmark = pytest.mark.integration

UNIT = 10**18


class AlertsHarness:
    def __init__(self, p: Pipeline, deployment: Deployment) -> None:
        self.p = p
        self.deployment = deployment
        self.topic = f"trace.alerts.{p.chain_id}"
        self.metrics_port, self.web_port = free_port(), free_port()
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        return {
            **self.p.env(),
            "TRACE_ALERTS_TOPIC": self.topic,
            "TRACE_FINALITY_DEPTH": "4",
            "TRACE_ALERTS_WEB_PORT": str(self.web_port),
            "TRACE_ALERTS_METRICS_PORT": str(self.metrics_port),
            "TRACE_STAKING_CONTRACTS": self.deployment.staking,
            **self.extra_env,
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracecli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start_evaluator(self) -> None:
        n = self.p.restarts.get("alerts", 0)
        self.p.restarts["alerts"] = n + 1
        with (self.p.root / f"alerts.{n}.log").open("wb") as log:
            self.p.procs["alerts"] = subprocess.Popen(
                [sys.executable, "-m", "tracecli", "alerts", "run"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def send(self, txs: list[dict[str, Any]]) -> int:
        """Send transactions; returns the block they were mined in (one block)."""
        hashes = [rpc(self.p.rpc_url, "eth_sendTransaction", tx) for tx in txs]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            receipts = [rpc(self.p.rpc_url, "eth_getTransactionReceipt", h) for h in hashes]
            if all(receipts):
                assert all(r["status"] == "0x1" for r in receipts), receipts
                return int(receipts[-1]["blockNumber"], 16)
            time.sleep(0.1)
        raise AssertionError("transactions not mined")

    def transfer(self, sender: str, to: str, amount: int) -> dict[str, Any]:
        data = token_artifact().calldata("transfer(address,uint256)", to, amount)
        return {"from": sender, "to": self.deployment.token, "data": data, "gas": hex(120_000)}

    def mint(self, sender: str, to: str, amount: int) -> dict[str, Any]:
        data = token_artifact().calldata("mint(address,uint256)", to, amount)
        return {"from": sender, "to": self.deployment.token, "data": data, "gas": hex(120_000)}

    def delegate(self, sender: str, validator: str, amount: int) -> dict[str, Any]:
        data = staking_artifact().calldata("delegate(address,uint256)", validator, amount)
        return {"from": sender, "to": self.deployment.staking, "data": data, "gas": hex(200_000)}

    def alerts(self) -> list[dict[str, Any]]:
        with self.p.db() as conn:
            rows = conn.execute(
                "SELECT rule_id, tier, block_number, block_hash, event_key, retracted_at IS NOT NULL"
                " FROM state.alerts WHERE chain_id = %s ORDER BY fired_at",
                (self.p.chain_id,),
            ).fetchall()
        names = ("rule", "tier", "block", "hash", "key", "retracted")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def rules_fired(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.alerts():
            if not a["retracted"]:
                counts[a["rule"]] = counts.get(a["rule"], 0) + 1
        return counts

    def published(self, expect: int, timeout: float = 30) -> list[dict[str, Any]]:
        codec = AvroCodec()
        consumer = Consumer(
            {
                "bootstrap.servers": self.p.kafka_bootstrap,
                "group.id": f"t-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe([self.topic])
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and len(got) < expect:
                msg = consumer.poll(0.25)
                if msg is not None and msg.error() is None and msg.value() is not None:
                    got.append(codec.decode(msg.value())[1])
            # a little longer, to see that no extra message comes
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                msg = consumer.poll(0.25)
                if msg is not None and msg.error() is None and msg.value() is not None:
                    got.append(codec.decode(msg.value())[1])
        finally:
            consumer.close()
        return got


RULES = """
rules:
  - id: big-transfer
    severity: high
    when: {event: transfer, action: transfer, min_amount: "5000000000000000000000"}
  - id: big-transfer-final
    tier: finalized
    when: {event: transfer, action: transfer, min_amount: "5000000000000000000000"}
  - id: watched
    when: {event: transfer, address: "WATCHED"}
  - id: mints
    when: {event: transfer, action: mint}
  - id: delegations
    when: {event: stake_change, action: delegate, min_amount: "1000000000000000000"}
  - id: burst
    when:
      event: transfer
      action: transfer
      from: "BURSTER"
      window: {blocks: 5, count_over: 3, group_by: from}
  - id: deep-reorg
    when: {event: reorg, min_depth: 2}
  - id: exchange-inflow
    when: {event: transfer, action: transfer, to_label: exchange}
  - id: usd-whale
    when: {event: transfer, action: transfer, min_usd: "100000"}
"""


@pytest.fixture
def harness(tmp_path: Path, pg_url: str, kafka_bootstrap: str) -> Iterator[AlertsHarness]:
    p = make_pipeline(tmp_path, pg_url, kafka_bootstrap)
    try:

        async def setup() -> Deployment:
            async with RpcClient(p.rpc_url) as client:
                return await deploy(client, n_accounts=6)

        deployment = asyncio.run(setup())
        h = AlertsHarness(p, deployment)
        accounts = deployment.accounts
        rules = RULES.replace("WATCHED", accounts[4]).replace("BURSTER", accounts[5])
        (tmp_path / "rules.yaml").write_text(rules)
        applied = h.cli("alerts", "apply", str(tmp_path / "rules.yaml"))
        assert applied.returncode == 0, applied.stderr
        assert "as version 1" in applied.stdout
        (tmp_path / "prices.csv").write_text(f"token,timestamp,usd\n{deployment.token},0,50\n")
        priced = h.cli("prices", "import", str(tmp_path / "prices.csv"), "--no-publish")
        assert priced.returncode == 0, priced.stderr
        # the worker learns the token's decimals from TRACE_TOKEN_DECIMALS
        h.extra_env["TRACE_TOKEN_DECIMALS"] = f"{deployment.token}=18"
        # follow from after the deployment: its mints are not part of what the test checks
        p.start("follower", "follower", "run", "--from-block", str(p.head() + 1))
        h.start_evaluator()
        yield h
    finally:
        p.stop_all()


def test_each_rule_kind_fires_on_its_events_only_and_reorgs_retract(harness: AlertsHarness) -> None:
    h, p = harness, harness.p
    a = h.deployment.accounts
    p.wait_for("the follower to start", lambda: (p.cursor() or 0) > 0, timeout=60)

    labelled = h.cli("labels", "add", a[2], "exchange")  # while the worker runs
    assert labelled.returncode == 0, labelled.stderr
    time.sleep(2.0)
    h.send([h.transfer(a[0], a[2], 3 * UNIT)])  # exchange-inflow (150 USD)
    big_block = h.send([h.transfer(a[0], a[1], 6000 * UNIT)])  # big-transfer (+ final), usd-whale
    h.send([h.transfer(a[0], a[1], 10 * UNIT)])  # nothing
    h.send([h.transfer(a[1], a[4], 1 * UNIT)])  # watched
    h.send([h.mint(a[2], a[2], 1 * UNIT)])  # mints
    h.send([h.delegate(a[3], a[0], 2 * UNIT)])  # delegations
    h.send([h.delegate(a[3], a[0], UNIT // 10)])  # below the delegation threshold
    for _ in range(4):  # 4 within 5 blocks: burst once
        h.send([h.transfer(a[5], a[1], 1 * UNIT)])
    p.wait_for("alerts", lambda: h.rules_fired().get("burst") == 1, timeout=60)
    p.wait_for("finality", lambda: "big-transfer-final" in h.rules_fired(), timeout=60)
    assert h.rules_fired() == {
        "big-transfer": 1,
        "big-transfer-final": 1,
        "watched": 1,
        "mints": 1,
        "delegations": 1,
        "burst": 1,
        "exchange-inflow": 1,
        "usd-whale": 1,
    }
    assert [x["block"] for x in h.alerts() if x["rule"] == "big-transfer"] == [big_block]

    # an instant alert whose block is reorged out is retracted; a finalized one never fires
    head_before = p.head()
    reorg_block = h.send([h.transfer(a[0], a[1], 7000 * UNIT)])
    p.wait_for("the instant alert", lambda: h.rules_fired().get("big-transfer") == 2, timeout=30)
    p.wait_for("the usd alert", lambda: h.rules_fired().get("usd-whale") == 2, timeout=30)
    depth = max(2, p.head() - reorg_block + 1)  # >= 2: the deep-reorg rule must fire
    rpc(p.rpc_url, "anvil_reorg", depth, [[{"from": a[2], "to": a[3], "value": "0x1"}, 0]])
    p.wait_for("the retraction", lambda: any(x["retracted"] for x in h.alerts()), timeout=30)
    assert head_before < reorg_block
    time.sleep(4 * 0.4 + 3)  # past the finality depth: the finalized twin must not fire
    fired = h.rules_fired()
    assert fired["big-transfer"] == 1 and fired["big-transfer-final"] == 1, h.alerts()
    retracted = [x for x in h.alerts() if x["retracted"]]
    # exactly the alerts whose block is no longer on the canonical chain are retracted
    orphaned = [
        x
        for x in h.alerts()
        if ":reorg:" not in x["key"]  # an alert on a reorg itself names no block
        and rpc(p.rpc_url, "eth_getBlockByNumber", hex(x["block"]), False)["hash"] != x["hash"]
    ]
    assert sorted(x["key"] for x in retracted) == sorted(x["key"] for x in orphaned)
    assert all(x["tier"] == "INSTANT" for x in retracted)
    assert {("big-transfer", reorg_block), ("usd-whale", reorg_block)} <= {
        (x["rule"], x["block"]) for x in retracted
    }
    assert fired.get("deep-reorg") == 1

    # what was published: every alert once, the retraction with the same id
    expected = len(h.alerts()) + len(retracted)
    published = h.published(expected)
    ids = [(m["alert_id"], m["kind"]) for m in published]
    assert len(set(ids)) == len(ids) == expected, ids
    retractions = {m["alert_id"]: m for m in published if m["kind"] == "RETRACTION"}
    originals = {m["alert_id"]: m for m in published if m["kind"] == "ALERT"}
    assert set(retractions) <= set(originals)  # every retraction names an alert published before
    assert sorted(originals[i]["event_key"] for i in retractions) == sorted(x["key"] for x in retracted)
    assert ("big-transfer", reorg_block) in {
        (originals[i]["rule_id"], originals[i]["block_number"]) for i in retractions
    }

    # what an operator scrapes: alerts per rule, retractions, block -> published latency
    port = h.metrics_port
    assert p.sample(port, "trace_alerts_total", rule_id="burst", tier="INSTANT") == 1
    assert p.sample(port, "trace_alert_retractions_total", rule_id="big-transfer") == 1
    assert (p.sample(port, "trace_alert_published_seconds_count") or 0) >= 1


def test_redelivered_block_event_gives_one_alert(harness: AlertsHarness) -> None:
    h, p = harness, harness.p
    a = h.deployment.accounts
    p.wait_for("the follower to start", lambda: (p.cursor() or 0) > 0, timeout=60)
    block = h.send([h.mint(a[2], a[2], 1 * UNIT)])
    p.wait_for("the alert", lambda: h.rules_fired().get("mints") == 1, timeout=30)

    # redeliver every event of the topic so far (as a consumer restart from 0 would)
    consumer = Consumer(
        {
            "bootstrap.servers": p.kafka_bootstrap,
            "group.id": f"copy-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([p.topic])
    copies = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = consumer.poll(0.25)
        if msg is not None and msg.error() is None:
            copies.append(msg.value())
            if AvroCodec().decode(msg.value())[1].get("block_number") == block:
                break
    consumer.close()
    producer = Producer({"bootstrap.servers": p.kafka_bootstrap})
    for value in copies:
        producer.produce(p.topic, key=str(p.chain_id).encode(), value=value)
    assert producer.flush(10) == 0
    time.sleep(4)
    assert h.rules_fired().get("mints") == 1
    assert len([x for x in h.alerts() if x["rule"] == "mints"]) == 1


def test_bad_rule_file_leaves_active_rules_unchanged(harness: AlertsHarness, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n    when: {event: transfer, min_amont: 5}\n")
    result = harness.cli("alerts", "apply", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: {bad}:3:"), result.stderr
    assert "min_amont" in result.stderr
    with harness.p.db() as conn:
        rows = conn.execute("SELECT version, active FROM state.alert_rule_sets").fetchall()
    assert rows == [(1, True)]


def test_historical_run_finds_the_alerts_and_delivers_nothing(harness: AlertsHarness) -> None:
    h, p = harness, harness.p
    a = h.deployment.accounts
    p.start_sink()  # history reads the hot tables
    p.wait_for("the follower to start", lambda: (p.cursor() or 0) > 0, timeout=60)
    first = p.head() + 1
    h.send([h.transfer(a[0], a[1], 6000 * UNIT)])
    h.send([h.mint(a[2], a[2], 1 * UNIT)])
    p.wait_for("live alerts", lambda: {"big-transfer", "mints"} <= set(h.rules_fired()), timeout=30)
    last = p.settle()

    with p.db() as conn:
        outbox_before = conn.execute("SELECT count(*) FROM state.outbox").fetchone()
        live_before = conn.execute("SELECT count(*) FROM state.alerts").fetchone()
    result = h.cli("alerts", "history", "--from", str(first), "--to", str(last), "--label", "replay")
    assert result.returncode == 0, result.stderr
    assert "nothing delivered" in result.stdout
    with p.db() as conn:
        assert conn.execute("SELECT count(*) FROM state.outbox").fetchone() == outbox_before
        assert conn.execute("SELECT count(*) FROM state.alerts").fetchone() == live_before
        run = conn.execute("SELECT label, from_block, to_block, alerts FROM state.alert_runs").fetchone()
        historical = {
            (r, n) for r, n in conn.execute("SELECT rule_id, block_number FROM state.historical_alerts")
        }
        live = {
            (r, n)
            for r, n in conn.execute(
                "SELECT rule_id, block_number FROM state.alerts WHERE block_number BETWEEN %s AND %s"
                " AND retracted_at IS NULL",
                (first, last),
            )
        }
    assert run is not None and run[:3] == ("replay", first, last)
    # the same events match the same rules (the finalized twin fires in history too)
    assert live <= historical
    assert {r for r, _ in historical} >= {"big-transfer", "big-transfer-final", "mints"}
    assert run[3] == len(historical)


def test_tail_and_server_sent_events_show_alerts_as_they_are_published(harness: AlertsHarness) -> None:
    import httpx

    h, p = harness, harness.p
    a = h.deployment.accounts
    port = free_port()
    env = {**h.env(), "TRACE_API_TOKEN": "s3cret", "TRACE_API_PORT": str(port)}
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracecli",
            "alerts",
            "tail",
            "--plain",
            "--rule",
            "mints",
            "--from-beginning",
            "--limit",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with (p.root / "api.log").open("wb") as log:
        p.procs["api"] = subprocess.Popen(
            [sys.executable, "-m", "tracecli", "api", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        p.wait_for("the API", lambda: _answers(base), timeout=30)
        assert httpx.get(f"{base}/v1/alerts/stream").status_code == 401
        assert httpx.get(f"{base}/openapi.json").json()["paths"]["/v1/alerts/stream"]
        p.wait_for("the follower to start", lambda: (p.cursor() or 0) > 0, timeout=60)
        with httpx.stream(
            "GET",
            f"{base}/v1/alerts/stream",
            params={"rule": "mints", "from_beginning": "true"},
            headers={"Authorization": "Bearer s3cret"},
            timeout=60,
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines) == ": subscribed"
            h.send([h.mint(a[2], a[2], 1 * UNIT)])
            h.send([h.mint(a[3], a[3], 1 * UNIT)])
            events: list[str] = []
            for line in lines:
                if line.startswith("event: ") or line.startswith("data: "):
                    events.append(line)
                if len([e for e in events if e.startswith("data: ")]) == 2:
                    break
        assert [e for e in events if e.startswith("event: ")] == ["event: alert", "event: alert"]
        payloads = [json.loads(e[len("data: ") :]) for e in events if e.startswith("data: ")]
        assert {x["rule_id"] for x in payloads} == {"mints"} and len({x["alert_id"] for x in payloads}) == 2
        out, err = tail.communicate(timeout=60)
        rows = [ln.split("\t") for ln in out.splitlines() if ln.strip()]
        assert len(rows) == 2, (out, err)
        assert all(r[1] == "ALERT" and r[2] == "mints" for r in rows), rows
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()


def _answers(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_enrichment_publishes_typed_transfers_and_stake_changes_with_reorgs(harness: AlertsHarness) -> None:
    h, p = harness, harness.p
    a = h.deployment.accounts
    assert h.cli("labels", "add", a[3], "fund").returncode == 0
    with (p.root / "enrich.0.log").open("wb") as log:
        p.procs["enrich"] = subprocess.Popen(
            [sys.executable, "-m", "tracecli", "enrich", "run"],
            env={**h.env(), "TRACE_ENRICH_WEB_PORT": str(free_port())},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    p.wait_for("the follower to start", lambda: (p.cursor() or 0) > 0, timeout=60)
    wanted = {f"trace.chain.{p.chain_id}.transfers", f"trace.chain.{p.chain_id}.stake_changes"}
    admin = AdminClient({"bootstrap.servers": p.kafka_bootstrap})  # enrich creates its topics first
    p.wait_for("the enrichment topics", lambda: wanted <= set(admin.list_topics(timeout=5).topics),
               timeout=90)
    mint_block = h.send([h.mint(a[2], a[2], 5 * UNIT)])
    delegate_block = h.send([h.delegate(a[3], a[0], 2 * UNIT)])
    # a reorg is news only of blocks the follower has seen: orphan the delegation's block once it has
    p.wait_for("the follower to see the delegation", lambda: (p.cursor() or 0) >= delegate_block, timeout=30)
    depth = max(1, p.head() - delegate_block + 1)
    rpc(p.rpc_url, "anvil_reorg", depth, [[{"from": a[1], "to": a[2], "value": "0x1"}, 0]])

    codec = AvroCodec()

    def read(topic: str, until: str) -> list[tuple[str, dict[str, Any]]]:
        consumer = Consumer(
            {
                "bootstrap.servers": p.kafka_bootstrap,
                "group.id": f"t-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
        consumer.subscribe([topic])
        got: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + 40
        try:
            while time.monotonic() < deadline and not any(n == until for n, _ in got):
                msg = consumer.poll(0.25)
                if msg is not None and msg.error() is None and msg.value() is not None:
                    got.append(codec.decode(msg.value()))
        finally:
            consumer.close()
        return got

    transfers = read(f"trace.chain.{p.chain_id}.transfers", "trace.chain.Reorg")
    mints = [r for n, r in transfers if n == "trace.enrich.Transfer" and r["action"] == "mint"]
    assert [(m["block_number"], m["to_address"], m["amount"]) for m in mints] == [
        (mint_block, a[2], str(5 * UNIT))
    ], ([n for n, _ in transfers], (p.root / "enrich.0.log").read_text()[-3000:])
    assert mints[0]["idempotency_key"].startswith(f"{p.chain_id}:transfer:{mint_block}:0x")
    names = [n for n, _ in transfers]
    assert "trace.chain.Reorg" in names, (names, (p.root / "follower.0.log").read_text()[-3000:])
    assert names.index("trace.chain.Reorg") > names.index("trace.enrich.Transfer")  # in chain order

    stakes = read(f"trace.chain.{p.chain_id}.stake_changes", "trace.chain.Reorg")
    changes = [r for n, r in stakes if n == "trace.enrich.StakeChange"]
    assert [(c["action"], c["delegator"], c["validator"], c["amount"]) for c in changes] == [
        ("delegate", a[3], a[0], str(2 * UNIT))
    ]
    assert changes[0]["delegator_labels"] == ["fund"]
    assert changes[0]["staking_contract"] == h.deployment.staking
