"""Benchmark of realtime alerting, printing figures against baselines measured in the same run.

A. Latency at 0.4 s blocks (traffic at --tx-per-block, a rule matching every mint): from the
   block's arrival at the node (a newHeads subscriber stamps it) to its alert on the alerts topic
   (a consumer with a 5 ms fetch wait stamps it), p50 and p99.
B. Throughput: --blocks synthetic Block events of --logs-per-block ERC-20 transfers on a chain's
   topic; the Faust alert worker with 100 active rules (thresholds, watched addresses, labels,
   windows) decodes, enriches and evaluates them and commits alerts + outbox. Baseline: a bare
   confluent-kafka consume + Avro decode of the same topic. Events/s from the worker's first
   committed batch to its last (its start-up is reported apart).

    .venv/bin/python bench/alerts.py [--latency-seconds 40] [--blocks 600] [--logs-per-block 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer
from harness import RssSampler, Stack, pct, watch_heads  # bench/ is on sys.path

from tracekit.avro.wire import AvroCodec
from tracekit.kafka import ensure_topics

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SYNTHETIC_CHAIN = 777001


def word(address: str) -> str:
    return "0x" + address[2:].rjust(64, "0")


def rules_yaml(addresses: list[str], tokens: list[str], rng: random.Random) -> str:
    """100 rules of mixed kinds: thresholds, watched addresses, labels, actions, windows, reorg, lag."""
    rules = []
    for i in range(35):
        rules.append(
            {
                "id": f"threshold-{i}",
                "when": {
                    "event": "transfer",
                    "token": rng.choice(tokens),
                    "min_amount": str(int(10 ** rng.uniform(21.7, 22))),  # whales: 5k-10k tokens
                },
            }
        )
    for i in range(25):
        rules.append({"id": f"watched-{i}", "when": {"event": "transfer", "address": rng.choice(addresses)}})
    for i in range(10):
        rules.append({"id": f"label-{i}", "when": {"event": "transfer", "to_label": f"label-{i}"}})
    for i in range(5):
        rules.append(
            {
                "id": f"action-{i}",
                "when": {"event": "transfer", "action": "mint", "min_amount": str(10**21 * (i + 1))},
            }
        )
    for i in range(20):
        window: dict[str, Any] = {"blocks": rng.randint(5, 50), "group_by": "from"}
        if i % 2:
            window["count_over"] = rng.randint(5, 40)
        else:
            window["sum_over"] = str(rng.randint(10**22, 10**23))
        rules.append(
            {
                "id": f"window-{i}",
                "when": {"event": "transfer", "token": rng.choice(tokens), "window": window},
            }
        )
    for i in range(3):
        rules.append({"id": f"reorg-{i}", "when": {"event": "reorg", "min_depth": i + 2}})
    for i in range(2):
        rules.append({"id": f"lag-{i}", "when": {"event": "lag", "min_blocks": 10 * (i + 1)}})
    assert len(rules) == 100
    return json.dumps({"rules": rules})  # JSON is YAML


def synthetic_blocks(
    n: int, logs: int, rng: random.Random, addresses: list[str], tokens: list[str]
) -> list[dict[str, Any]]:
    blocks = []
    parent = "0x" + "00" * 32
    for number in range(1, n + 1):
        block_hash = "0x" + uuid.UUID(int=rng.getrandbits(128)).hex * 2
        entries = []
        for index in range(logs):
            frm = "0x" + "00" * 20 if rng.random() < 0.03 else rng.choice(addresses)
            entries.append(
                {
                    "block_number": number,
                    "transaction_index": index,
                    "log_index": index,
                    "transaction_hash": "0x" + uuid.UUID(int=rng.getrandbits(128)).hex * 2,
                    "address": rng.choice(tokens),
                    "topic0": TRANSFER,
                    "topic1": word(frm),
                    "topic2": word(rng.choice(addresses)),
                    "topic3": None,
                    "data": "0x" + format(int(10 ** rng.uniform(15, 22)), "064x"),
                }
            )
        blocks.append(
            {
                "chain_id": SYNTHETIC_CHAIN,
                "block_number": number,
                "block_hash": block_hash,
                "parent_hash": parent,
                "timestamp": 1_795_000_000 + number,
                "author": None,
                "gas_used": "0",
                "gas_limit": "0",
                "base_fee_per_gas": None,
                "extra_data": None,
                "observed_at_ms": 0,
                "idempotency_key": f"{SYNTHETIC_CHAIN}:block:{number}:{block_hash}",
                "transactions": [],
                "logs": entries,
            }
        )
        parent = block_hash
    return blocks


def bare_consume(bootstrap: str, topic: str, expect: int) -> tuple[float, int]:
    """Seconds to consume ``expect`` messages and Avro-decode them; returns (seconds, events)."""
    codec = AvroCodec()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    got = events = 0
    start = None
    while got < expect:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        start = start or time.perf_counter()
        events += len(codec.decode(msg.value())[1]["logs"])
        got += 1
    elapsed = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    return elapsed, events


def consume_alerts(bootstrap: str, topic: str, seen: dict[str, float], stop: threading.Event) -> None:
    codec = AvroCodec()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lat-{uuid.uuid4()}",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 5,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    while not stop.is_set():
        msg = consumer.poll(0.05)
        if msg is None or msg.error():
            continue
        now = time.time()
        alert = codec.decode(msg.value())[1]
        seen.setdefault(alert["block_hash"], now)
    consumer.close()


def cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracecli", *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"trace {' '.join(args)}: {result.stderr.strip()}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="trace-bench-alerts-"))
    root.chmod(0o755)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root))
    stack = Stack(root)
    env = {**stack.env(stack.bootstrap), "TRACE_FINALITY_DEPTH": "10"}
    sampler = RssSampler()
    sampler.start()
    results: dict[str, Any] = {}
    rng = random.Random(5)
    try:
        # -- A. latency at 0.4 s blocks ------------------------------------------------------
        (root / "latency.yaml").write_text(
            json.dumps({"rules": [{"id": "every-mint", "when": {"event": "transfer", "action": "mint"}}]})
        )
        cli(env, "alerts", "apply", str(root / "latency.yaml"))
        stack.start(
            "traffic",
            [
                "devchain",
                "traffic",
                "--rpc-url",
                stack.anvil_spec.rpc_url,
                "--tx-per-block",
                str(args.tx_per_block),
                "--seed",
                "3",
            ],
            env,
        )
        stack.start("follower", ["follower", "run"], env)
        alerts = stack.start("alerts", ["alerts", "run"], env)
        sampler.pids["alerts"] = alerts.pid
        await asyncio.sleep(12)
        arrivals: dict[str, float] = {}
        on_topic: dict[str, float] = {}
        stop_ws, stop_consumer = asyncio.Event(), threading.Event()
        consumer = threading.Thread(
            target=consume_alerts, args=(stack.bootstrap, "trace.alerts", on_topic, stop_consumer)
        )
        consumer.start()
        ws_task = asyncio.create_task(watch_heads(stack.anvil_spec.ws_url, arrivals, stop_ws))
        await asyncio.sleep(args.latency_seconds)
        stop_ws.set()
        await ws_task
        await asyncio.sleep(2)
        stop_consumer.set()
        consumer.join()
        latencies = [(on_topic[h] - t) * 1000 for h, t in arrivals.items() if h in on_topic]
        results["latency"] = {
            "blocks": len(arrivals),
            "blocks_with_alerts": len(latencies),
            "block_to_alert_on_topic_ms": {
                "p50": round(pct(latencies, 50), 1),
                "p99": round(pct(latencies, 99), 1),
            },
        }
        print(json.dumps({"latency": results["latency"]}), flush=True)
        for name in ("traffic", "follower", "alerts"):
            stack.stop(name)

        # -- B. throughput with 100 rules ------------------------------------------------------
        addresses = ["0x" + format(rng.getrandbits(160), "040x") for _ in range(2000)]
        tokens = ["0x" + format(rng.getrandbits(160), "040x") for _ in range(5)]
        (root / "rules.yaml").write_text(rules_yaml(addresses, tokens, rng))
        cli(env, "alerts", "apply", str(root / "rules.yaml"))
        labels_csv = root / "labels.csv"
        labels_csv.write_text("".join(f"{rng.choice(addresses)},label-{i % 10}\n" for i in range(50)))
        cli(env, "labels", "import", str(labels_csv))
        topic = f"trace.chain.{SYNTHETIC_CHAIN}.blocks"
        ensure_topics(stack.bootstrap, {topic: 1, f"{topic}.dlq": 1})
        codec = AvroCodec()
        blocks = synthetic_blocks(args.blocks, args.logs_per_block, rng, addresses, tokens)
        producer = Producer({"bootstrap.servers": stack.bootstrap, "linger.ms": 5})
        for block in blocks:
            producer.produce(
                topic, key=str(SYNTHETIC_CHAIN).encode(), value=codec.encode("trace.chain.Block", block)
            )
            producer.poll(0)
        producer.flush(60)
        bare_s, bare_events = bare_consume(stack.bootstrap, topic, len(blocks))
        started = time.perf_counter()
        synthetic_env = {
            **env,
            "TRACE_CHAIN_ID": str(SYNTHETIC_CHAIN),
            "TRACE_ALERTS_TOPIC": "trace.alerts.bench",
        }
        alerts = stack.start("alerts-b", ["alerts", "run"], synthetic_env)
        sampler.pids["alerts-throughput"] = alerts.pid
        last = blocks[-1]["block_number"]
        with psycopg.connect(stack.pg.url, autocommit=True) as conn:

            def progress() -> int:
                row = conn.execute(
                    "SELECT block_number FROM state.alert_progress WHERE chain_id = %s", (SYNTHETIC_CHAIN,)
                ).fetchone()
                return -1 if row is None else int(row[0])

            while (first_seen := progress()) < 0:
                time.sleep(0.005)
            steady_from = time.perf_counter()
            while progress() < last:
                time.sleep(0.005)
            steady_s = time.perf_counter() - steady_from
            fired = conn.execute(
                "SELECT count(*) FROM state.alerts WHERE chain_id = %s", (SYNTHETIC_CHAIN,)
            ).fetchone()[0]
        events_measured = (last - first_seen) * args.logs_per_block
        results["throughput"] = {
            "rules": 100,
            "blocks": len(blocks),
            "events": bare_events,
            "bare_consume_decode_events_per_s": round(bare_events / bare_s),
            "worker_startup_s": round(steady_from - started, 2),
            "worker_events_per_s": round(events_measured / steady_s),
            "ratio_worker_to_bare": round(events_measured / steady_s / (bare_events / bare_s), 3),
            "alerts_fired": fired,
        }
    finally:
        sampler.stop.set()
        results["peak_rss_mb"] = {k: round(v / 1024, 1) for k, v in sampler.peak.items()}
        stack.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-seconds", type=float, default=40)
    parser.add_argument("--tx-per-block", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=600)
    parser.add_argument("--logs-per-block", type=int, default=100)
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
