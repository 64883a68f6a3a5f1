"""cryo_ingest against a real anvil: a mined history of dev-chain traffic, both engines, the files.

The module's own anvil mines on demand; :func:`build_history` fills it with ~300 blocks of
ERC-20 / staking / ETH traffic (8 tx per block) after one block per unusual transaction shape
(legacy, EIP-2930, creation with LOG0..LOG4, reverted creation, wide values, every call type with
a failed subtrace and a self-destruct, empty block). A small HTTP proxy in front of it answers
429s and rate-limit errors, corrupts replies on demand and records the methods it forwarded.
Files go to an object store: every test runs on S3 (SeaweedFS) and on a directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from operators.cryo_ingest import (
    DATASETS,
    DEFAULT_DATASETS,
    BlockMissing,
    CryoFailed,
    IngestRequest,
    NotYetConfirmed,
    RateLimited,
    StagedFile,
    confirmed_head,
    file_schema,
    ingest_chunk,
)
from operators.cryo_ingest.columns import SCHEMAS
from operators.cryo_ingest.devhistory import History, build_history
from operators.cryo_ingest.files import put_tables
from operators.cryo_ingest.traces import CALL_TYPES
from operators.range_splitter import Chunk, split_range
from tests.integration.object_stores import TestStore
from tracekit.errors import BadRpcData, ChainMismatch, RetryableError
from tracekit.jsonrpc import RpcClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHAIN_ID = 10143
HISTORY_BLOCKS = 300
# what rate-limiting providers answer (Alchemy-style), with HTTP status 429
TOO_MANY = b'{"jsonrpc": "2.0", "id": null, "error": {"code": 429, "message": "Too Many Requests"}}'


# -- the chain and the proxy ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def anvil_url(on_demand_anvil: str) -> str:
    return on_demand_anvil


@pytest.fixture(scope="module")
async def history(anvil_url: str) -> History:
    async with RpcClient(anvil_url, timeout=60) as rpc:
        return await build_history(rpc, blocks=HISTORY_BLOCKS, tx_per_block=8, seed=7)


@dataclass
class Proxy:
    """Forwards JSON-RPC POSTs to anvil; scripted misbehaviour first."""

    upstream: str
    url: str = ""
    http_429: int = 0  # answer this many next requests with HTTP 429
    rpc_limited: int = 0  # then this many with a JSON-RPC -32005 error per call
    corrupt: Callable[[Any], Any] | None = None  # rewrite each parsed upstream reply
    limit_only: frozenset[str] | None = None  # rate-limit only requests with one of these methods
    methods: list[str] = field(default_factory=list)
    limited_answers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.http_429 = self.rpc_limited = self.limited_answers = 0
            self.corrupt = None
            self.limit_only = None
            self.methods.clear()


def _handler(proxy: Proxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            request = json.loads(body)
            calls = request if isinstance(request, list) else [request]
            with proxy.lock:
                proxy.methods.extend(c["method"] for c in calls)
                targeted = proxy.limit_only is None or any(c["method"] in proxy.limit_only for c in calls)
                if proxy.http_429 > 0 and targeted:
                    proxy.http_429 -= 1
                    proxy.limited_answers += 1
                    self._send(429, TOO_MANY, {"retry-after": "0"})
                    return
                if proxy.rpc_limited > 0 and targeted:
                    proxy.rpc_limited -= 1
                    proxy.limited_answers += 1
                    errors = [{"jsonrpc": "2.0", "id": c["id"],
                               "error": {"code": -32005, "message": "limit exceeded"}} for c in calls]
                    self._send(200, json.dumps(errors if isinstance(request, list) else errors[0]).encode())
                    return
                corrupt = proxy.corrupt
            upstream = urllib.request.Request(proxy.upstream, data=body,
                                              headers={"content-type": "application/json"})
            with urllib.request.urlopen(upstream, timeout=30) as reply:
                data = reply.read()
            if corrupt is not None:
                data = json.dumps(corrupt(json.loads(data))).encode()
            self._send(200, data)

    return Handler


@pytest.fixture(scope="module")
def proxy(anvil_url: str) -> Iterator[Proxy]:
    state = Proxy(anvil_url)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def fresh_proxy(proxy: Proxy) -> Iterator[Proxy]:
    proxy.reset()
    yield proxy
    proxy.reset()


@pytest.fixture
async def rpc(anvil_url: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(anvil_url, timeout=60) as client:
        yield client


@dataclass(frozen=True)
class Out:
    """Where a test's files go: ``store`` (the module's S3 prefix or directory) under ``base``."""

    store: TestStore
    base: str

    def __call__(self, name: str) -> str:
        """A key prefix of this test's own."""
        return f"{self.base}{name}/"

    def keys(self, name: str) -> list[str]:
        return self.store.keys(self(name))

    async def ingest(self, req: IngestRequest) -> list[StagedFile]:
        return await ingest_chunk(req, self.store.store)

    def read(self, f: StagedFile) -> pa.Table:
        return self.store.read_key(f.key)


@pytest.fixture
def out(object_store: TestStore) -> Out:
    return Out(object_store, f"{uuid.uuid4().hex[:12]}/")


def request(url: str, chunk: Chunk, prefix: str, **kw: Any) -> IngestRequest:
    kw.setdefault("confirmations", 0)
    return IngestRequest(url, CHAIN_ID, chunk, prefix, **kw)


# -- the rpc engine's files are the node's data --------------------------------------------------


async def _node_data(rpc: RpcClient, first: int, last: int) -> tuple[list[Any], list[Any], list[Any]]:
    blocks = await rpc.batch([("eth_getBlockByNumber", (hex(n), True)) for n in range(first, last + 1)])
    receipts = await rpc.batch([("eth_getBlockReceipts", (hex(n),)) for n in range(first, last + 1)])
    logs = await rpc.call("eth_getLogs", {"fromBlock": hex(first), "toBlock": hex(last)})
    return blocks, receipts, logs


def _b(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value[2:])


async def test_rpc_engine_files_hold_the_nodes_data(
    history: History, anvil_url: str, rpc: RpcClient, out: Out
) -> None:
    first, last = 0, history.last_block  # from genesis: the deploy blocks too
    staged: list[StagedFile] = []
    for chunk in split_range(first, last, 128):  # aligned chunks: 0..127, 128..255, ...
        files = await out.ingest(request(anvil_url, chunk, out("all"), batch_blocks=16, concurrency=3))
        assert [f.dataset for f in files] == list(DEFAULT_DATASETS)  # no traces unless asked for
        sizes = dict(out.store.store.list(out("all")))
        for f in files:
            assert f.name == f"monad_testnet__{f.dataset}__{chunk.start:08d}_to_{chunk.end:08d}.parquet"
            assert f.key == out("all") + f.name
            assert sizes[f.key] == f.bytes
            assert hashlib.sha256(out.store.store.get(f.key)).hexdigest() == f.sha256
        staged += files
    assert out.keys("all") == sorted(f.key for f in staged)  # nothing else under the prefix
    if out.store.kind == "dir":  # no temporary files left in the directory either
        directory = Path(out.store.store.url(staged[0].key)).parent
        assert sorted(p.name for p in directory.iterdir()) == sorted(f.name for f in staged)

    def table(dataset: str) -> pa.Table:
        return pa.concat_tables([out.read(f) for f in staged if f.dataset == dataset])

    blocks_t, txs_t, logs_t = table("blocks"), table("transactions"), table("logs")
    for dataset, t in (("blocks", blocks_t), ("transactions", txs_t), ("logs", logs_t)):
        assert t.schema.equals(file_schema(dataset))  # the contract's columns and types

    blocks, receipts, logs = await _node_data(rpc, first, last)
    txs = [tx for b in blocks for tx in b["transactions"]]
    assert blocks_t.num_rows == last - first + 1
    assert blocks_t["block_number"].to_pylist() == [int(b["number"], 16) for b in blocks]
    assert blocks_t["block_hash"].to_pylist() == [_b(b["hash"]) for b in blocks]
    assert blocks_t["parent_hash"].to_pylist() == [_b(b["parentHash"]) for b in blocks]
    assert blocks_t["parent_hash"].to_pylist()[1:] == blocks_t["block_hash"].to_pylist()[:-1]
    assert blocks_t["n_transactions"].to_pylist() == [len(b["transactions"]) for b in blocks]
    assert blocks_t["timestamp"].to_pylist() == [int(b["timestamp"], 16) for b in blocks]
    assert blocks_t["gas_used"].to_pylist() == [int(b["gasUsed"], 16) for b in blocks]
    assert set(blocks_t["chain_id"].to_pylist()) == {CHAIN_ID}

    assert txs_t.num_rows == len(txs) >= history.transactions
    assert txs_t["transaction_hash"].to_pylist() == [_b(t["hash"]) for t in txs]
    assert txs_t["from_address"].to_pylist() == [_b(t["from"]) for t in txs]
    assert txs_t["to_address"].to_pylist() == [_b(t.get("to")) for t in txs]
    assert txs_t["value_string"].to_pylist() == [str(int(t["value"], 16)) for t in txs]
    assert txs_t["value_binary"].to_pylist() == [int(t["value"], 16).to_bytes(32, "big") for t in txs]
    assert txs_t["success"].to_pylist() == [r["status"] == "0x1" for rs in receipts for r in rs]
    assert txs_t["gas_used"].to_pylist() == [int(r["gasUsed"], 16) for rs in receipts for r in rs]

    assert logs_t.num_rows == len(logs) > history.blocks  # most traffic emits a log
    assert logs_t["address"].to_pylist() == [_b(lg["address"]) for lg in logs]
    for k in range(4):
        expected = [_b(lg["topics"][k]) if k < len(lg["topics"]) else None for lg in logs]
        assert logs_t[f"topic{k}"].to_pylist() == expected
    assert logs_t["data"].to_pylist() == [_b(lg["data"]) for lg in logs]
    assert logs_t["log_index"].to_pylist() == [int(lg["logIndex"], 16) for lg in logs]

    # the unusual shapes are really there
    assert None in txs_t["to_address"].to_pylist()  # creations
    assert False in txs_t["success"].to_pylist()  # the reverted creation
    assert {int(t["type"], 16) for t in txs} >= {0, 1, 2}
    assert max(int(v) for v in txs_t["value_string"].to_pylist()) > 2**64
    assert {len(lg["topics"]) for lg in logs} >= {0, 1, 2, 3, 4}
    assert b"" in logs_t["data"].to_pylist()


# -- rpc == cryo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "datasets",
    [DATASETS, ("logs",), ("blocks", "logs"), ("transactions",), ("traces",)],
    ids=["all", "logs-by-range", "blocks+logs", "transactions", "traces"],
)
async def test_rpc_engine_writes_the_same_files_as_cryo(
    history: History, anvil_url: str, out: Out, datasets: tuple[str, ...]
) -> None:
    """Byte-identical files; the cryo side's go through local temporary files (spill_bytes=0) and
    put_file, the rpc side's are put from memory."""
    chunk = Chunk(history.first_block - 3, history.last_block)  # deploy blocks, specials, traffic
    rpc_files = await out.ingest(request(anvil_url, chunk, out("rpc"), datasets=datasets))
    cryo_files = await out.ingest(request(anvil_url, chunk, out("cryo"), datasets=datasets, engine="cryo",
                                          spill_bytes=0))
    assert [f.dataset for f in rpc_files] == list(datasets) == [f.dataset for f in cryo_files]
    for ours, theirs in zip(rpc_files, cryo_files, strict=True):
        assert ours.name == theirs.name
        a, b = out.read(ours), out.read(theirs)
        assert a.schema.equals(b.schema, check_metadata=True)
        assert a.schema.equals(file_schema(ours.dataset))  # the contract's, not cryo's types
        assert a.num_rows == b.num_rows == ours.rows == theirs.rows > 0
        assert a.equals(b), ours.dataset
        assert (ours.sha256, ours.bytes) == (theirs.sha256, theirs.bytes)  # byte-identical files
        assert hashlib.sha256(out.store.store.get(theirs.key)).hexdigest() == theirs.sha256


# -- traces ---------------------------------------------------------------------------------------


def _trace_row(t: dict[str, Any]) -> dict[str, Any]:
    """What the traces file should hold for one ``trace_block`` entry (cryo's columns)."""
    action, result, kind = t["action"], t.get("result") or {}, t["type"]
    return {
        "action_from": _b(action.get("from") or action.get("address") or action.get("author")),
        "action_to": _b(action.get("to") or action.get("refundAddress")),
        "action_value": str(int(action.get("value") or action.get("balance"), 16)),
        "action_gas": int(action["gas"], 16) if "gas" in action else None,
        "action_input": _b(action.get("input")),
        "action_call_type": CALL_TYPES[action["callType"]] if kind == "call" else None,
        "action_init": _b(action.get("init")),
        "action_reward_type": None,
        "action_type": kind,
        "result_gas_used": int(result["gasUsed"], 16) if result else None,
        "result_output": _b(result.get("output")),
        "result_code": _b(result.get("code")),
        "result_address": _b(result.get("address")),
        "trace_address": "_".join(map(str, t["traceAddress"])),
        "subtraces": t["subtraces"],
        "transaction_index": t["transactionPosition"],
        "transaction_hash": _b(t["transactionHash"]),
        "block_number": t["blockNumber"],
        "block_hash": _b(t["blockHash"]),
        "error": t.get("error"),
        "chain_id": CHAIN_ID,
    }


async def test_traces_rows_equal_trace_block(
    history: History, anvil_url: str, rpc: RpcClient, out: Out
) -> None:
    first, last = history.first_block - 3, history.last_block
    staged: list[StagedFile] = []
    for chunk in split_range(first, last, 100):
        staged += await out.ingest(request(anvil_url, chunk, out("traces"), datasets=("traces",),
                                           batch_blocks=20))
    table = pa.concat_tables([out.read(f) for f in staged])
    assert table.schema.equals(file_schema("traces"))
    node = await rpc.batch([("trace_block", (hex(n),)) for n in range(first, last + 1)])
    assert table.num_rows == sum(len(ts) for ts in node)
    by_block: dict[int, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        by_block.setdefault(row["block_number"], []).append(row)
    sampled = [*range(first, first + 10), *range(first + 10, last + 1, 23), last]  # specials + traffic
    for n in sampled:
        assert by_block.get(n, []) == [_trace_row(t) for t in node[n - first]], n
    kinds = {(r["action_type"], r["action_call_type"]) for r in table.to_pylist()}
    assert kinds >= {("call", "call"), ("call", "static_call"), ("call", "delegate_call"),
                     ("call", "call_code"), ("create", None), ("suicide", None)}
    assert {r["error"] for r in table.to_pylist()} >= {None, "Reverted"}  # failed traces are kept
    assert any(r["trace_address"] for r in table.to_pylist())  # nested calls (staking -> token)


# -- the confirmed head ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["rpc", "cryo"])
async def test_chunk_past_the_confirmed_head_reads_and_writes_nothing(
    history: History, rpc: RpcClient, fresh_proxy: Proxy, out: Out, engine: str
) -> None:
    head = history.last_block
    assert await confirmed_head(rpc, 5) == head - 5
    with pytest.raises(NotYetConfirmed, match=rf"chunk {head - 10}..{head - 4} reaches past the "
                                              rf"confirmed head {head - 5}") as info:
        await out.ingest(request(fresh_proxy.url, Chunk(head - 10, head - 4), out("out"), engine=engine,
                                 confirmations=5))
    assert isinstance(info.value, RetryableError)
    with pytest.raises(NotYetConfirmed, match=f"confirmed head {head - 20}"):
        await out.ingest(request(fresh_proxy.url, Chunk(head - 30, head - 19), out("out"), engine=engine,
                                 confirmed_head=head - 20))
    with pytest.raises(NotYetConfirmed, match=f"confirmed head {head}"):  # never above the node's head
        await out.ingest(request(fresh_proxy.url, Chunk(head, head + 1), out("out"), engine=engine,
                                 confirmed_head=head + 10))
    assert out.keys("out") == []
    assert set(fresh_proxy.methods) == {"eth_chainId", "eth_blockNumber"}
    # at the confirmed head exactly: fine
    files = await out.ingest(request(fresh_proxy.url, Chunk(head - 9, head - 5), out("out"), engine=engine,
                                     confirmations=5))
    assert [f.rows for f in files if f.dataset == "blocks"] == [5]


async def test_chain_mismatch_is_refused(anvil_url: str, history: History, out: Out) -> None:
    with pytest.raises(ChainMismatch, match="serves 10143, the request is for 1"):
        await out.ingest(IngestRequest(anvil_url, 1, Chunk(0, 1), out("out"), confirmations=0))
    assert out.keys("out") == []


# -- rate limits ---------------------------------------------------------------------------------


async def test_rate_limits_are_retried_with_backoff(
    history: History, anvil_url: str, fresh_proxy: Proxy, out: Out
) -> None:
    chunk = Chunk(history.first_block, history.first_block + 99)
    direct = await out.ingest(request(anvil_url, chunk, out("direct")))
    fresh_proxy.http_429, fresh_proxy.rpc_limited = 3, 3
    limited = await out.ingest(request(fresh_proxy.url, chunk, out("limited"), batch_blocks=10,
                                       backoff_base_s=0.01, backoff_max_s=0.05))
    assert fresh_proxy.limited_answers == 6
    assert [(f.name, f.sha256) for f in limited] == [(f.name, f.sha256) for f in direct]


async def test_cryo_engine_rides_out_rate_limits(
    history: History, anvil_url: str, fresh_proxy: Proxy, out: Out
) -> None:
    chunk = Chunk(history.first_block, history.first_block + 49)
    direct = await out.ingest(request(anvil_url, chunk, out("direct"), datasets=("blocks",)))
    fresh_proxy.http_429, fresh_proxy.limit_only = 4, frozenset({"eth_getBlockByNumber"})  # cryo's calls
    limited = await out.ingest(request(fresh_proxy.url, chunk, out("limited"), datasets=("blocks",),
                                       engine="cryo", backoff_base_s=0.01, backoff_max_s=0.05))
    assert fresh_proxy.limited_answers == 4
    assert [f.sha256 for f in limited] == [f.sha256 for f in direct]


async def test_endless_rate_limits_give_up_with_a_retryable_error(
    history: History, fresh_proxy: Proxy, out: Out
) -> None:
    fresh_proxy.http_429 = 10**6
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RateLimited, match="still rate limited after 3 retries") as info:
        await out.ingest(request(fresh_proxy.url, Chunk(1, 10), out("out"), rate_limit_retries=3,
                                 backoff_base_s=0.01, backoff_max_s=0.02))
    assert isinstance(info.value, RetryableError)
    assert fresh_proxy.limited_answers == 4
    assert loop.time() - started < 5
    assert out.keys("out") == []


# -- bad data -------------------------------------------------------------------------------------


def _corrupt_block_field(number: int, key: str, value: Any, *, in_tx: bool = False) -> Callable[[Any], Any]:
    def corrupt(reply: Any) -> Any:
        for item in reply if isinstance(reply, list) else [reply]:
            result = item.get("result")
            if isinstance(result, dict) and result.get("number") == hex(number):
                if in_tx:
                    result["transactions"][0][key] = value
                else:
                    result[key] = value
        return reply

    return corrupt


def _drop_block(number: int) -> Callable[[Any], Any]:
    def corrupt(reply: Any) -> Any:
        for item in reply if isinstance(reply, list) else [reply]:
            result = item.get("result")
            if isinstance(result, dict) and result.get("number") == hex(number):
                item["result"] = None
        return reply

    return corrupt


def _corrupt_log_topics(reply: Any) -> Any:
    for item in reply if isinstance(reply, list) else [reply]:
        result = item.get("result")
        if isinstance(result, list) and result and isinstance(result[0], dict) and "topics" in result[0]:
            result[0]["topics"] = ["0x" + "11" * 32] * 5
    return reply


@pytest.mark.parametrize(
    ("corruption", "datasets", "message"),
    [
        ("timestamp", ("blocks",), r"block {n}: field 'timestamp' is malformed"),
        ("miner", ("blocks",), r"block {n}: field 'miner' should be 20 bytes, got 2"),
        ("from", ("transactions",), r"block {n} transaction 0 \(0x[0-9a-f]{{64}}\): field 'from' should be"),
        ("topics", ("logs",), r"block {first} log 0: field 'topics' is malformed .*at most 4"),
        ("missing", ("blocks",), r"block {n}: the node has no block at this height"),
    ],
)
async def test_bad_rpc_data_names_block_and_field(
    history: History, fresh_proxy: Proxy, out: Out, corruption: str, datasets: tuple[str, ...],
    message: str,
) -> None:
    n = history.last_block - 3  # a traffic block with transactions
    fresh_proxy.corrupt = {
        "timestamp": _corrupt_block_field(n, "timestamp", "0xnothex"),
        "miner": _corrupt_block_field(n, "miner", "0xabcd"),
        "from": _corrupt_block_field(n, "from", "0x1234", in_tx=True),
        "topics": _corrupt_log_topics,
        "missing": _drop_block(n),
    }[corruption]
    expected = BlockMissing if corruption == "missing" else BadRpcData
    with pytest.raises(expected, match=message.format(n=n, first=n - 9)):
        # one batch (one request slot): the first bad row of the chunk is the one reported
        await out.ingest(request(fresh_proxy.url, Chunk(n - 9, n), out("out"), datasets=datasets,
                                 batch_blocks=1000, concurrency=1))
    assert out.keys("out") == []


async def test_cryo_panics_become_cryo_failed(history: History, fresh_proxy: Proxy, out: Out) -> None:
    n = history.last_block - 3
    fresh_proxy.corrupt = _corrupt_block_field(n, "hash", "0x1234")
    with pytest.raises(CryoFailed, match=rf"cryo failed collecting blocks for blocks {n - 9}..{n}") as info:
        await out.ingest(request(fresh_proxy.url, Chunk(n - 9, n), out("out"), datasets=("blocks",),
                                 engine="cryo"))
    assert isinstance(info.value, RetryableError)
    assert out.keys("out") == []


# -- staging files -------------------------------------------------------------------------------


def test_staged_files_are_put_all_or_nothing(out: Out) -> None:
    chunk = Chunk(1000, 1999)
    blocks = file_schema("blocks").empty_table()
    logs = file_schema("logs").empty_table()
    store = out.store.store
    first = put_tables({"blocks": blocks, "logs": logs}, store, out("stage"), "ethereum", chunk)
    assert [f.name for f in first] == ["ethereum__blocks__00001000_to_00001999.parquet",
                                       "ethereum__logs__00001000_to_00001999.parquet"]
    for f in first:
        assert hashlib.sha256(store.get(f.key)).hexdigest() == f.sha256
        assert out.read(f).schema.equals(file_schema(f.dataset))
    again = put_tables({"blocks": blocks}, store, out("stage"), "ethereum", chunk)  # a re-run replaces
    assert again[0].sha256 == first[0].sha256
    # through local temporary files and put_file instead of memory: the same bytes
    spilled = put_tables({"blocks": blocks, "logs": logs}, store, out("spilled"), "ethereum", chunk,
                         spill_bytes=0)
    assert [(f.name, f.bytes, f.sha256) for f in spilled] == [(f.name, f.bytes, f.sha256) for f in first]
    assert [hashlib.sha256(store.get(f.key)).hexdigest() for f in spilled] == [f.sha256 for f in first]
    for wrong in (pa.table({"block_number": pa.array([1], pa.int64())}),
                  SCHEMAS["logs"].empty_table()):  # cryo's types, not conformed to the contract
        with pytest.raises(ValueError, match="logs table does not have the dataset's schema"):
            put_tables({"blocks": blocks, "logs": wrong}, store, out("other"), "ethereum", chunk)
    assert out.keys("other") == []  # the blocks file was not put either
    assert out.keys("stage") == [f.key for f in first]
