"""The realtime path on the real stack: anvil -> follower -> broker -> Faust sink -> Postgres.

Runs the follower, the sink and the traffic generator as subprocesses, injects reorgs of depth
1..6 and kill -9s both services mid-run, then checks the hot tables against the node at every
height up to the cursor.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from tests.integration.pipeline import Pipeline, make_pipeline, rpc

pytestmark = pytest.mark.integration

DEV_ACCOUNT = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
OTHER_ACCOUNT = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"


def inject_reorg(p: Pipeline, depth: int) -> None:
    """anvil_reorg with a replacement transfer, so the replaced blocks differ from the old ones."""
    tx = {"from": DEV_ACCOUNT, "to": OTHER_ACCOUNT, "value": hex(1000 + depth)}
    rpc(p.rpc_url, "anvil_reorg", depth, [[tx, 0]])


@pytest.fixture
def pipeline(tmp_path: Path, pg_url: str, kafka_bootstrap: str) -> Iterator[Pipeline]:
    p = make_pipeline(tmp_path, pg_url, kafka_bootstrap)
    try:
        yield p
    finally:
        p.stop_all()


def start_traffic(p: Pipeline, tx_per_block: int = 20) -> subprocess.Popen[bytes]:
    with (p.root / "traffic.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tracecli", "devchain", "traffic", "--rpc-url", p.rpc_url,
             "--tx-per-block", str(tx_per_block), "--seed", "7"],
            env=p.env(), stdout=log, stderr=subprocess.STDOUT,
        )


def test_hot_tables_converge_through_reorgs_and_kill9(pipeline: Pipeline) -> None:
    p = pipeline
    traffic = start_traffic(p)
    try:
        p.start_follower()
        p.start_sink()
        p.wait_for("the first blocks in the hot tables", lambda: (p.sink_tip() or 0) >= 10, timeout=90)

        for depth in range(1, 7):  # reorgs of depth 1..6 while both services run
            p.wait_for("traffic to land", lambda: p.head() >= 10)
            # mining paused while the follower reaches the head: a reorg of blocks it has not
            # emitted yet is invisible to it, and the depth-6 reorg must be seen whole
            rpc(p.rpc_url, "anvil_setIntervalMining", 0)
            try:
                p.wait_for("the follower at the head", lambda: (p.cursor() or -1) >= p.head(), timeout=30)
                inject_reorg(p, depth)
            finally:
                rpc(p.rpc_url, "anvil_setIntervalMining", 1)
            time.sleep(1.2)

        # kill -9 the follower mid-run; the chain moves on (and reorgs) while it is down
        p.kill9("follower")
        time.sleep(2.0)
        inject_reorg(p, 3)
        time.sleep(1.0)
        p.start_follower()
        p.wait_for("the follower to catch up", lambda: (p.cursor() or 0) >= p.head() - 2, timeout=60)

        # kill -9 the sink mid-run
        p.kill9("sink")
        inject_reorg(p, 2)
        time.sleep(2.0)
        p.start_sink()
        inject_reorg(p, 4)
        time.sleep(2.0)
    finally:
        traffic.terminate()
        traffic.wait(15)

    head = p.settle(timeout=90)
    assert p.mismatches(head) == []

    with p.db() as conn:
        depths = [row[0] for row in conn.execute(
            "SELECT depth FROM state.reorgs WHERE chain_id = %s", (p.chain_id,))]
        tx_rows, distinct_tx = conn.execute(
            "SELECT count(*), count(DISTINCT (block_number, transaction_index)) FROM hot.transactions"
            " WHERE chain_id = %s", (p.chain_id,)).fetchone()
        heights = conn.execute(
            "SELECT count(*), min(block_number), max(block_number) FROM hot.blocks WHERE chain_id = %s",
            (p.chain_id,)).fetchone()
    assert max(depths) >= 6, depths  # the depth-6 reorg was seen whole
    assert len(depths) >= 8, depths
    assert tx_rows == distinct_tx and tx_rows > 100  # traffic landed; no duplicates
    assert heights == (head + 1, 0, head)  # no gap


def test_malformed_message_goes_to_dead_letter_and_sink_keeps_going(pipeline: Pipeline) -> None:
    p = pipeline
    p.start_follower()
    p.start_sink()
    p.wait_for("the first blocks in the hot tables", lambda: (p.sink_tip() or 0) >= 3, timeout=90)

    producer = Producer({"bootstrap.servers": p.kafka_bootstrap})
    producer.produce(p.topic, key=str(p.chain_id).encode(), value=b"\xc3\x01not-avro-at-all")
    producer.produce(p.topic, key=str(p.chain_id).encode(), value=b"plain garbage")
    assert producer.flush(10) == 0
    before = p.sink_tip() or 0

    consumer = Consumer({"bootstrap.servers": p.kafka_bootstrap, "group.id": f"dlq-check-{p.chain_id}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([f"{p.topic}.dlq"])
    dead = []
    deadline = time.monotonic() + 60
    try:
        while len(dead) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                dead.append(msg)
    finally:
        consumer.close()
    assert [m.value() for m in dead] == [b"\xc3\x01not-avro-at-all", b"plain garbage"]
    reasons = [dict(m.headers())["trace-dlq-reason"].decode() for m in dead]
    assert all("DecodeError" in r for r in reasons), reasons
    assert "fingerprint" in reasons[0] or "truncated" in reasons[0], reasons[0]

    p.wait_for("the sink to keep applying blocks", lambda: (p.sink_tip() or 0) > before + 3)
    head = p.settle()
    assert p.mismatches(head) == []

    # what an operator scrapes: the dead letters counted, the follower's cursor and lag
    chain = str(p.chain_id)
    sink, follower = p.sink_metrics_port, p.follower_metrics_port
    assert p.sample(sink, "trace_dead_letters_total", topic=p.topic, stage="decode") == 2
    assert (p.sample(sink, "trace_sink_events_total", chain_id=chain, type="block") or 0) >= head
    p.wait_for("the follower's metrics to show the head",
               lambda: p.sample(follower, "trace_follower_cursor_block", chain_id=chain) == head)
    assert p.sample(follower, "trace_follower_head_block", chain_id=chain) == head
    assert p.sample(follower, "trace_follower_lag_blocks", chain_id=chain) == 0
    assert (p.sample(follower, "trace_follower_events_total", chain_id=chain, type="block") or 0) >= head


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TRACE_RPC_URL": "http://127.0.0.1:9"}, "is unreachable"),
        ({"TRACE_CHAIN_ID": "1"}, "chain id mismatch"),
    ],
)
def test_follower_bad_configuration_fails_with_one_line(
    pipeline: Pipeline, env: dict[str, str], expected: str
) -> None:
    p = pipeline
    full_env = {**p.env(), **env}
    result = subprocess.run(
        [sys.executable, "-m", "tracecli", "follower", "run"],
        env=full_env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def test_follower_falls_back_to_polling_without_websocket(pipeline: Pipeline) -> None:
    p = pipeline
    p.ws_url = "ws://127.0.0.1:9"  # nothing listens: newHeads is unavailable
    p.start_follower()
    p.start_sink()
    p.wait_for("the follower to follow by polling", lambda: (p.cursor() or 0) >= 15, timeout=60)
    inject_reorg(p, 3)
    time.sleep(2.0)
    head = p.settle()
    assert p.mismatches(head) == []
    with p.db() as conn:
        rows = conn.execute("SELECT depth FROM state.reorgs WHERE chain_id = %s", (p.chain_id,))
        depths = [r[0] for r in rows]
    assert depths == [3]
    log = sorted(p.root.glob("follower.*.log"))[-1].read_text()
    assert "newHeads subscription unavailable" in log
