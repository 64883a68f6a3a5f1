"""Benchmark of the realtime path, printing figures (ratios are against baselines run here).

1. Latency at 0.4 s blocks with >= 100 tx per block: from the block's arrival at the node (the
   moment a newHeads subscriber hears of it) to its event on the topic (a consumer receives it)
   and to its hot rows (``hot.blocks.inserted_at``), p50 and p99.
2. Catch-up after downtime: the follower restarted behind a range of blocks of the same traffic,
   in blocks/s, as a ratio to a bare batched JSON-RPC fetch (blocks with transactions +
   receipts, parsed, nothing else) of the same range, in the same run.
3. Peak RSS of the follower and of the Faust worker over the whole run.

    .venv/bin/python bench/realtime.py [--latency-seconds 60] [--catchup-blocks 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from confluent_kafka import Consumer
from harness import CHAIN_ID, RssSampler, Stack, pct, watch_heads  # bench/ is on sys.path

from operators.devchain.deploy import deploy
from operators.devchain.plan import PlanState, TrafficMix, plan_block
from operators.devchain.traffic import encode_tx
from tracekit.jsonrpc import RpcClient


def consume_topic(bootstrap: str, topic: str, seen: dict[str, float], stop: threading.Event) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{time.time()}",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 5,
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    while not stop.is_set():
        msg = consumer.poll(0.05)
        if msg is None or msg.error():
            continue
        now = time.time()
        key = dict(msg.headers() or []).get("trace-idempotency-key", b"").decode()
        if ":block:" in key:
            seen.setdefault(key.rsplit(":", 1)[1], now)
    consumer.close()


async def send_block_traffic(
    rpc: RpcClient,
    deployment: Any,
    mix: TrafficMix,
    rng: random.Random,
    state: PlanState,
    nonces: dict[str, int],
) -> None:
    txs = plan_block(mix, rng, deployment.accounts, state)
    calls = []
    for tx in txs:
        params = encode_tx(tx, deployment)
        params["nonce"] = hex(nonces[tx.sender])
        nonces[tx.sender] += 1
        calls.append(("eth_sendTransaction", [params]))
    await rpc.batch(calls)


async def bare_fetch(url: str, first: int, last: int, batch: int = 50) -> float:
    """Blocks/s of a bare batched fetch of [first, last]: blocks with txs + receipts, parsed."""
    async with httpx.AsyncClient(timeout=60, headers={"content-type": "application/json"}) as http:
        start = time.perf_counter()
        for lo in range(first, last + 1, batch):
            numbers = range(lo, min(last, lo + batch - 1) + 1)
            body = []
            for n in numbers:
                body.append(
                    {
                        "jsonrpc": "2.0",
                        "id": 2 * n,
                        "method": "eth_getBlockByNumber",
                        "params": [hex(n), True],
                    }
                )
                body.append(
                    {"jsonrpc": "2.0", "id": 2 * n + 1, "method": "eth_getBlockReceipts", "params": [hex(n)]}
                )
            replies = orjson.loads((await http.post(url, content=orjson.dumps(body))).content)
            if not isinstance(replies, list) or any(r.get("result") is None for r in replies):
                raise RuntimeError(f"bare fetch failed: {str(replies)[:300]}")
        return (last - first + 1) / (time.perf_counter() - start)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="trace-bench-"))
    root.chmod(0o755)  # Postgres runs as an unprivileged uid and must reach its data dir
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root))
    stack = Stack(root)
    bootstrap = stack.bootstrap
    env = stack.env(bootstrap)
    sampler = RssSampler()
    sampler.start()
    results: dict[str, Any] = {"tx_per_block": args.tx_per_block}
    try:
        async with RpcClient(stack.anvil_spec.rpc_url) as rpc:
            deployment = await deploy(rpc, n_accounts=16)
            # -- 1. latency at 0.4 s blocks --------------------------------------------------
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
                    "1",
                ],
                env,
            )
            follower = stack.start("follower", ["follower", "run"], env)
            sink = stack.start("sink", ["sink", "run"], env)
            sampler.pids.update(follower=follower.pid, sink=sink.pid)
            await asyncio.sleep(12)  # deploy traffic accounts, join the consumer group, warm up
            arrivals: dict[str, float] = {}
            on_topic: dict[str, float] = {}
            stop_ws, stop_consumer = asyncio.Event(), threading.Event()
            consumer = threading.Thread(
                target=consume_topic,
                args=(bootstrap, f"trace.chain.{CHAIN_ID}.blocks", on_topic, stop_consumer),
            )
            consumer.start()
            ws_task = asyncio.create_task(watch_heads(stack.anvil_spec.ws_url, arrivals, stop_ws))
            await asyncio.sleep(args.latency_seconds)
            stop_ws.set()
            await ws_task
            await asyncio.sleep(2)
            stop_consumer.set()
            consumer.join()
            with psycopg.connect(stack.pg.url) as conn:
                rows = conn.execute(
                    "SELECT block_hash, extract(epoch FROM inserted_at), tx_count FROM hot.blocks"
                    " WHERE block_hash = ANY(%s)",
                    (list(arrivals),),
                ).fetchall()
            to_topic = [(on_topic[h] - t) * 1000 for h, t in arrivals.items() if h in on_topic]
            to_rows = [(float(ts) - arrivals[h]) * 1000 for h, ts, _ in rows]
            tx_counts = [c for _, _, c in rows]
            results["latency"] = {
                "blocks": len(arrivals),
                "on_topic": len(to_topic),
                "in_hot_rows": len(to_rows),
                "mean_tx_per_block": round(statistics.mean(tx_counts), 1) if tx_counts else 0,
                "to_topic_ms": {"p50": round(pct(to_topic, 50), 1), "p99": round(pct(to_topic, 99), 1)},
                "to_hot_rows_ms": {"p50": round(pct(to_rows, 50), 1), "p99": round(pct(to_rows, 99), 1)},
            }
            print(json.dumps({"latency": results["latency"]}), flush=True)
            stack.stop("traffic")

            # -- 2. catch-up after downtime --------------------------------------------------
            stack.stop("follower")
            await rpc.call("anvil_setIntervalMining", 0)
            cursor = int(await rpc.call("eth_blockNumber"), 16)
            nonces = {
                a: int(await rpc.call("eth_getTransactionCount", a, "pending"), 16)
                for a in deployment.accounts
            }
            balances = {
                a: int(b, 16)
                for a, b in zip(
                    deployment.accounts,
                    await rpc.batch(
                        [
                            (
                                "eth_call",
                                [
                                    {"to": deployment.token, "data": "0x70a08231" + a[2:].rjust(64, "0")},
                                    "latest",
                                ],
                            )
                            for a in deployment.accounts
                        ]
                    ),
                    strict=True,
                )
            }
            state = PlanState(balances=balances)
            mix = TrafficMix(tx_per_block=args.tx_per_block)
            rng = random.Random(2)
            made = time.perf_counter()
            for _ in range(args.catchup_blocks):
                await send_block_traffic(rpc, deployment, mix, rng, state, nonces)
                await rpc.call("anvil_mine", 1)
            results["history_blocks_per_s"] = round(args.catchup_blocks / (time.perf_counter() - made), 1)
            with psycopg.connect(stack.pg.url) as conn:
                cursor = conn.execute("SELECT block_number FROM state.follower_cursor").fetchone()[0]
            head = int(await rpc.call("eth_blockNumber"), 16)
            first, last = cursor + 1, head
            bare_before = await bare_fetch(stack.anvil_spec.rpc_url, first, last)
            started = time.perf_counter()
            follower = stack.start("follower", ["follower", "run"], env)
            sampler.pids["follower"] = follower.pid
            with psycopg.connect(stack.pg.url, autocommit=True) as conn:

                def cursor_now() -> int:
                    return int(conn.execute("SELECT block_number FROM state.follower_cursor").fetchone()[0])

                while (first_seen := cursor_now()) < first:  # start-up: imports, connections, 1st batch
                    time.sleep(0.005)
                steady_from = time.perf_counter()
                startup_s = steady_from - started
                while cursor_now() < last:
                    time.sleep(0.005)
                follower_s = time.perf_counter() - started
                steady_s = time.perf_counter() - steady_from
                while (conn.execute("SELECT max(block_number) FROM hot.blocks").fetchone()[0] or 0) < last:
                    time.sleep(0.05)
                sink_s = time.perf_counter() - started
            bare_after = await bare_fetch(stack.anvil_spec.rpc_url, first, last)
            bare = max(bare_before, bare_after)
            n = last - first + 1
            # steady rate: from the first confirmed batch on; the restart (interpreter, imports,
            # connections, first batch) is reported apart, and in the rate including start-up
            results["catchup"] = {
                "blocks": n,
                "txs_per_block": args.tx_per_block,
                "bare_rpc_blocks_per_s": round(bare, 1),
                "follower_startup_s": round(startup_s, 2),
                "follower_blocks_per_s_incl_startup": round(n / follower_s, 1),
                "follower_blocks_per_s": round((last - first_seen) / steady_s, 1),
                "ratio_follower_to_bare": round((last - first_seen) / steady_s / bare, 3),
                "hot_rows_blocks_per_s": round(n / sink_s, 1),
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
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument("--catchup-blocks", type=int, default=600)
    parser.add_argument("--tx-per-block", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
