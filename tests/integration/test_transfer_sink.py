"""hot.transfers and hot.stake_changes on the real stack: anvil -> follower -> blocks topic ->
enrichment worker -> transfers / stake-changes topics -> transfer sink -> Postgres.

The follower, the enrichment worker, the transfer sink and the dev-chain traffic run as
subprocesses; reorgs are injected with ``anvil_reorg``. The tables are compared with the
Transfer / Delegated / Undelegated logs the node returns for its canonical blocks.
"""

from __future__ import annotations

import decimal
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from operators.devchain.artifacts import staking_artifact, token_artifact
from tests.integration.pipeline import Pipeline, make_pipeline, rpc
from tracekit.avro.wire import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

UNIT = 10**18
PRICE = Decimal("2.5")
TRANSFER_TOPIC0 = token_artifact().topic("Transfer(address,address,uint256)")
STAKE_TOPICS0 = {staking_artifact().topic("Delegated(address,address,uint256)"): "delegate",
                 staking_artifact().topic("Undelegated(address,address,uint256)"): "undelegate"}
ZERO = "0x" + "00" * 20

TRANSFER_COLS = ("block_number", "log_index", "block_hash", "transaction_hash", "token", "from_address",
                 "to_address", "amount", "action", "decimals", "usd_value", "from_labels", "to_labels")
STAKE_COLS = ("block_number", "log_index", "block_hash", "transaction_hash", "staking_contract", "delegator",
              "validator", "amount", "action", "delegator_labels", "validator_labels")
Rows = dict[tuple[int, int], tuple[Any, ...]]


class Harness:
    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.state_file = p.root / "data" / "devchain" / f"{p.chain_id}.json"
        self.traffic: subprocess.Popen[bytes] | None = None
        self.deployment: dict[str, Any] = {}

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "tracecli", *args], env=self.p.env(),
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def deploy(self) -> dict[str, Any]:
        """Contracts where the enrichment worker finds them (HOME/data/devchain/<chain>.json)."""
        self.cli("devchain", "deploy", "--rpc-url", self.p.rpc_url, "--state-file", str(self.state_file))
        self.deployment = json.loads(self.state_file.read_text())
        return self.deployment

    def transfer(self, sender: str, to: str, amount: int) -> dict[str, Any]:
        data = token_artifact().calldata("transfer(address,uint256)", to, amount)
        return {"from": sender, "to": self.deployment["token"], "data": data, "gas": hex(120_000)}

    def delegate(self, sender: str, validator: str, amount: int) -> dict[str, Any]:
        data = staking_artifact().calldata("delegate(address,uint256)", validator, amount)
        return {"from": sender, "to": self.deployment["staking"], "data": data, "gas": hex(200_000)}

    def start_traffic(self) -> None:
        with (self.p.root / "traffic.log").open("wb") as log:
            self.traffic = subprocess.Popen(
                [sys.executable, "-m", "tracecli", "devchain", "traffic", "--rpc-url", self.p.rpc_url,
                 "--tx-per-block", "8", "--seed", "11", "--state-file", str(self.state_file)],
                env=self.p.env(), stdout=log, stderr=subprocess.STDOUT)

    def stop_traffic(self) -> None:
        if self.traffic is not None:
            self.traffic.terminate()
            self.traffic.wait(20)
            self.traffic = None

    def send(self, tx: dict[str, Any]) -> int:
        """Send one transaction; the block it was mined in."""
        tx_hash = rpc(self.p.rpc_url, "eth_sendTransaction", tx)
        found: list[int] = []

        def mined() -> bool:
            receipt = rpc(self.p.rpc_url, "eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                assert receipt["status"] == "0x1", receipt
                found.append(int(receipt["blockNumber"], 16))
            return bool(found)

        self.p.wait_for(f"transaction {tx_hash} to be mined", mined, timeout=20)
        return found[0]

    def reorgs(self) -> int:
        with self.p.db() as conn:
            row = conn.execute("SELECT count(*) FROM state.reorgs WHERE chain_id = %s",
                               (self.p.chain_id,)).fetchone()
        return int(row[0]) if row else 0

    def reorg(self, depth: int, replacement: list[Any]) -> None:
        """``anvil_reorg``, then wait until the follower announced it."""
        before = self.reorgs()
        rpc(self.p.rpc_url, "anvil_reorg", depth, replacement)
        self.p.wait_for(f"the follower to announce the depth-{depth} reorg", lambda: self.reorgs() > before)

    def tables(self) -> tuple[Rows, Rows]:
        with self.p.db() as conn:
            transfers = {(r[0], r[1]): r for r in conn.execute(
                f"SELECT {', '.join(TRANSFER_COLS)} FROM hot.transfers WHERE chain_id = %s",
                (self.p.chain_id,))}
            stakes = {(r[0], r[1]): r for r in conn.execute(
                f"SELECT {', '.join(STAKE_COLS)} FROM hot.stake_changes WHERE chain_id = %s",
                (self.p.chain_id,))}
        return transfers, stakes

    def canonical(self, head: int, labels: dict[str, list[str]]) -> tuple[Rows, Rows]:
        """What the node's canonical blocks 0..head say the tables must hold (decoded here, from
        its receipts: every 3-topic Transfer log; Delegated/Undelegated of the staking contract)."""
        token, staking = self.deployment["token"], self.deployment["staking"]
        transfers: Rows = {}
        stakes: Rows = {}
        for n in range(head + 1):
            receipts = rpc(self.p.rpc_url, "eth_getBlockReceipts", hex(n))
            for log in (lg for r in receipts for lg in r["logs"]):
                topics, data = log["topics"], log["data"]
                if len(topics) != 3 or len(data) != 66:
                    continue
                first, second, amount = "0x" + topics[1][-40:], "0x" + topics[2][-40:], int(data, 16)
                key = (n, int(log["logIndex"], 16))
                common = (n, key[1], log["blockHash"], log["transactionHash"], log["address"].lower())
                if topics[0] == TRANSFER_TOPIC0:
                    action = "mint" if first == ZERO else "burn" if second == ZERO else "transfer"
                    ours = log["address"].lower() == token
                    usd = None
                    if ours:
                        with decimal.localcontext(prec=80):
                            usd = Decimal(amount).scaleb(-18) * PRICE
                    transfers[key] = (*common, first, second, Decimal(amount), action, 18 if ours else None,
                                      usd, labels.get(first, []), labels.get(second, []))
                elif topics[0] in STAKE_TOPICS0 and log["address"].lower() == staking:
                    stakes[key] = (*common, first, second, Decimal(amount), STAKE_TOPICS0[topics[0]],
                                   labels.get(first, []), labels.get(second, []))
        return transfers, stakes

    def settle(self) -> int:
        """Stop mining; wait until the follower reached the head."""
        rpc(self.p.rpc_url, "anvil_setIntervalMining", 0)
        head = self.p.head()
        self.p.wait_for("the follower to reach the head", lambda: self.p.cursor() == head, timeout=90)
        return head

    def wait_equal(self, want: tuple[Rows, Rows], timeout: float = 90) -> None:
        try:
            self.p.wait_for("hot.transfers and hot.stake_changes to equal the node",
                            lambda: self.tables() == want, timeout=timeout)
        except AssertionError:
            got = self.tables()
            for name, g, w in zip(("transfers", "stake_changes"), got, want, strict=True):
                extra = {k: g[k] for k in sorted(set(g) - set(w))[:5]}
                missing = {k: w[k] for k in sorted(set(w) - set(g))[:5]}
                differ = {k: (g[k], w[k]) for k in sorted(set(g) & set(w)) if g[k] != w[k]}
                print(f"{name}: extra {extra}\nmissing {missing}\ndiffer {dict(list(differ.items())[:5])}")
            raise

    def committed(self, topic: str) -> int:
        """The transfer sink's committed offset on ``topic`` (-1001 if none)."""
        group = f"trace-transfer-sink-{self.p.chain_id}"  # the Faust app's id
        consumer = Consumer({"bootstrap.servers": self.p.kafka_bootstrap, "group.id": group,
                             "enable.auto.commit": False})
        try:
            return int(consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
        finally:
            consumer.close()


@pytest.fixture
def harness(tmp_path: Path, pg_url: str, kafka_bootstrap: str) -> Iterator[Harness]:
    p = make_pipeline(tmp_path, pg_url, kafka_bootstrap)
    h = Harness(p)
    try:
        yield h
    finally:
        h.stop_traffic()
        p.stop_all()


def read_topic(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 60,
               ) -> list[Any]:
    """Messages of ``topic`` from its beginning until ``done(messages so far)``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join: tansu delays those
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.25)
            if msg is not None and msg.error() is None:
                got.append(msg)
                if done(got):
                    return got
    finally:
        consumer.close()
    raise AssertionError(f"{topic}: the awaited messages did not come within {timeout}s ({len(got)} read)")


def test_hot_transfers_and_stake_changes_equal_the_canonical_chain_through_reorgs_and_replay(
    harness: Harness,
) -> None:
    h, p = harness, harness.p
    deployment = h.deploy()
    accounts = deployment["accounts"]
    labels = {accounts[1]: ["exchange"], accounts[2]: ["fund", "whale"]}
    for address, names in labels.items():
        for label in names:
            h.cli("labels", "add", address, label)
    (p.root / "prices.csv").write_text(f"token,timestamp,usd\n{deployment['token']},0,{PRICE}\n")
    h.cli("prices", "import", str(p.root / "prices.csv"), "--no-publish")

    h.start_traffic()
    p.start_follower()
    p.start_enrich()
    p.start_transfer_sink()
    p.wait_for("the first transfers and stake changes in the hot tables",
               lambda: all(len(t) >= 5 for t in h.tables()), timeout=120)

    for depth in (1, 3, 2, 4):  # reorgs while traffic runs; replacements carry a plain ETH transfer
        p.wait_for("more traffic to land", lambda: (p.cursor() or 0) >= p.head() - 1)
        h.reorg(depth, [[{"from": accounts[0], "to": accounts[3], "value": hex(depth)}, 0]])
    h.stop_traffic()

    # a reorg whose replacement blocks have no transfers and no stake changes at all
    transfer_block = h.send(h.transfer(accounts[0], accounts[1], 3 * UNIT))
    stake_block = h.send(h.delegate(accounts[2], accounts[4], UNIT))
    p.wait_for("the sink to store both", lambda: any(k[0] == transfer_block for k in h.tables()[0])
               and any(k[0] == stake_block for k in h.tables()[1]), timeout=60)
    h.reorg(p.head() - transfer_block + 1, [[{"from": accounts[3], "to": accounts[5], "value": "0x1"}, 0]])

    head = h.settle()
    want = h.canonical(head, labels)
    h.wait_equal(want)
    transfers, stakes = want
    assert len(transfers) > 50 and len(stakes) > 3, (len(transfers), len(stakes))
    assert not any(k[0] >= transfer_block for k in transfers) and not any(k[0] >= stake_block for k in stakes)
    assert {r[8] for r in transfers.values()} >= {"mint", "transfer", "burn"}
    assert any(r[11] == ["exchange"] or r[12] == ["exchange"] for r in transfers.values())
    assert any(r[9] == ["fund", "whale"] for r in stakes.values())
    port, chain = p.transfer_sink_metrics_port, str(p.chain_id)
    dlq = p.sample(port, "trace_dead_letters_total", topic=f"trace.chain.{chain}.transfers", stage="decode")
    assert dlq is None
    # every reorg the follower announced reached the sink on both topics
    reorgs = p.sample(port, "trace_transfer_sink_records_total", chain_id=chain, type="reorg") or 0
    assert reorgs >= 2 * h.reorgs(), reorgs

    # replaying both topics from the beginning changes nothing
    head_hash = rpc(p.rpc_url, "eth_getBlockByNumber", hex(head), False)["hash"]
    producer = Producer({"bootstrap.servers": p.kafka_bootstrap})
    codec = AvroCodec()

    def at_head_end(got: list[Any]) -> bool:  # the head block's end: everything of the chain is before it
        name, datum = codec.decode(got[-1].value())
        at = (datum.get("block_number"), datum.get("block_hash"))
        return name == "trace.enrich.BlockEnd" and at == (head, head_hash)

    for topic in (f"trace.chain.{p.chain_id}.transfers", f"trace.chain.{p.chain_id}.stake_changes"):
        messages = read_topic(p.kafka_bootstrap, topic, at_head_end)
        offsets: list[int] = []

        def delivered(err: Any, msg: Any, offsets: list[int] = offsets) -> None:
            offsets.append(-1 if err else msg.offset())

        for msg in messages:
            producer.produce(topic, key=msg.key(), value=msg.value(), headers=msg.headers(),
                             on_delivery=delivered)
        assert producer.flush(30) == 0 and len(offsets) == len(messages) and min(offsets) >= 0
        last = max(offsets)
        p.wait_for(f"the sink to consume the replayed {topic}", lambda t=topic, n=last: h.committed(t) > n,
                   timeout=90)
    assert h.tables() == want


def test_unusable_messages_go_to_the_dead_letter_topic_and_the_sink_keeps_going(harness: Harness) -> None:
    h, p = harness, harness.p
    deployment = h.deploy()
    accounts = deployment["accounts"]
    p.start("follower", "follower", "run", "--from-block", str(p.head() + 1))
    p.start_enrich()
    p.start_transfer_sink()
    first = h.send(h.transfer(accounts[0], accounts[1], UNIT))
    p.wait_for("the first transfer in hot.transfers", lambda: any(k[0] == first for k in h.tables()[0]),
               timeout=120)

    topic = f"trace.chain.{p.chain_id}.transfers"
    codec = AvroCodec()
    template = next(v for v in h.tables()[0].values())
    alien = {  # decodes, but belongs to another chain
        "chain_id": p.chain_id + 1, "block_number": 1, "block_hash": "0x" + "ee" * 32, "timestamp": 1,
        "log_index": 0, "transaction_hash": template[3], "token": template[4], "from_address": ZERO,
        "to_address": accounts[1], "amount": "5", "action": "mint", "decimals": None, "usd_value": None,
        "from_labels": [], "to_labels": [], "idempotency_key": "alien",
    }
    bad = [b"\xc3\x01not-avro-at-all", b"plain garbage", codec.encode("trace.enrich.Transfer", alien)]
    producer = Producer({"bootstrap.servers": p.kafka_bootstrap})
    for value in bad:
        producer.produce(topic, key=str(p.chain_id).encode(), value=value)
    assert producer.flush(10) == 0

    dead = read_topic(p.kafka_bootstrap, f"{topic}.dlq", lambda got: len(got) == len(bad))
    assert [m.value() for m in dead] == bad
    reasons = [dict(m.headers())["trace-dlq-reason"].decode() for m in dead]
    assert reasons[0].startswith("DecodeError") and reasons[1].startswith("DecodeError"), reasons
    assert reasons[2].startswith("InvalidEvent") and f"chain {p.chain_id + 1}" in reasons[2], reasons
    with p.db() as conn:
        alien_rows = conn.execute("SELECT count(*) FROM hot.transfers WHERE chain_id = %s",
                                  (p.chain_id + 1,)).fetchone()
    assert alien_rows == (0,)

    later = h.send(h.delegate(accounts[2], accounts[4], UNIT))
    p.wait_for("the sink to keep applying records", lambda: any(k[0] == later for k in h.tables()[1]),
               timeout=60)
    port = p.transfer_sink_metrics_port
    assert p.sample(port, "trace_dead_letters_total", topic=topic, stage="decode") == 3


def test_the_tables_have_the_record_fields_as_columns(pg_url: str) -> None:
    contracts = Path(__file__).resolve().parents[2] / "schemas" / "avro"
    with psycopg.connect(pg_url) as conn:
        for table, contract in (("transfers", "transfer.avsc"), ("stake_changes", "stake_change.avsc")):
            columns = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'hot'"
                " AND table_name = %s ORDER BY ordinal_position", (table,))]
            fields = [f["name"] for f in json.loads((contracts / contract).read_text())["fields"]]
            assert columns == fields
