"""Ingest requests, chain names, file names and the confirmed-head rule (pure)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.cryo_ingest import (
    DATASETS,
    DEFAULT_DATASETS,
    IngestRequest,
    NotYetConfirmed,
    chain_name,
    check_confirmed,
    file_name,
    parse_file_name,
)
from operators.range_splitter import Chunk
from tracekit.errors import ConfigError, RetryableError

URL = "http://127.0.0.1:8545"


def req(**kw: Any) -> IngestRequest:
    kw.setdefault("rpc_url", URL)
    kw.setdefault("chain_id", 10143)
    kw.setdefault("chunk", Chunk(0, 999))
    kw.setdefault("prefix", "_staging/r/t.1/")
    return IngestRequest(**kw)


def test_defaults() -> None:
    r = req()
    assert r.chain == "monad_testnet"
    assert r.datasets == DEFAULT_DATASETS == ("blocks", "transactions", "logs")  # traces: opt-in
    assert DATASETS == (*DEFAULT_DATASETS, "traces")
    assert req(datasets=("traces", "blocks")).datasets == ("blocks", "traces")
    assert r.engine == "rpc"
    assert r.confirmed_head is None and r.confirmations == 10


def test_chain_names() -> None:
    assert chain_name(10143) == "monad_testnet"
    assert chain_name(143) == "monad"
    assert chain_name(1) == "ethereum"
    assert chain_name(31337) == "network_31337"  # as cryo names chains it does not know
    assert req(chain_id=5, chain="my_devnet").chain == "my_devnet"


def test_datasets_are_normalised_to_the_canonical_order() -> None:
    assert req(datasets=("logs", "blocks")).datasets == ("blocks", "logs")
    assert req(datasets="logs").datasets == ("logs",)  # type: ignore[arg-type]
    assert req(datasets=["transactions"]).datasets == ("transactions",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rpc_url", "ws://127.0.0.1:8546", "rpc_url must be an http"),
        ("chain_id", 0, "chain_id must be an integer >= 1, got 0"),
        ("chain_id", "10143", "chain_id must be an integer >= 1"),
        ("chunk", (0, 9), "chunk must be an operators.range_splitter.Chunk"),
        ("datasets", (), "distinct names among blocks, transactions, logs, traces, got \\[\\]"),
        ("datasets", ("blocks", "receipts"), "got \\['blocks', 'receipts'\\]"),
        ("datasets", ("logs", "logs"), "datasets must be distinct"),
        ("engine", "web3", "engine must be one of rpc, cryo, got 'web3'"),
        ("chain", "Monad Testnet", "chain name must be lower-case"),
        ("confirmed_head", 1.5, "confirmed_head must be an integer or None"),
        ("confirmations", -1, "confirmations must be an integer >= 0, got -1"),
        ("batch_blocks", 0, "batch_blocks must be an integer >= 1, got 0"),
        ("concurrency", 0, "concurrency must be an integer >= 1, got 0"),
        ("rate_limit_retries", -1, "rate_limit_retries must be an integer >= 0"),
        ("backoff_base_s", 0, "backoff_base_s must be a number > 0, got 0"),
        ("backoff_max_s", float("inf"), "backoff_max_s must be a number > 0, got inf"),
        ("timeout_s", True, "timeout_s must be a number > 0, got True"),
        ("prefix", "_staging/x", "prefix must be '' or a key prefix ending in '/', got '_staging/x'"),
        ("prefix", "/abs/", "prefix '/abs/' is not a valid key prefix"),
        ("prefix", "a/../b/", "is not a valid key prefix"),
        ("spill_bytes", -1, "spill_bytes must be an integer >= 0, got -1"),
    ],
)
def test_bad_values_are_config_errors_naming_them(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        req(**{field: value})


def test_json_round_trip() -> None:
    r = req(datasets=("logs",), engine="cryo", confirmed_head=1234, batch_blocks=20)
    data = r.to_json()
    assert data["chunk"] == {"start": 0, "end": 999}
    assert data["prefix"] == "_staging/r/t.1/"
    assert IngestRequest.from_json(data) == r
    with pytest.raises(ConfigError, match="invalid ingest request"):
        IngestRequest.from_json({"rpc_url": URL})
    with pytest.raises(ConfigError, match="chunk end must be >= its start"):
        IngestRequest.from_json({**data, "chunk": {"start": 5, "end": 4}})


def test_file_names_follow_cryo() -> None:
    name = file_name("monad_testnet", "logs", Chunk(0, 999))
    assert name == "monad_testnet__logs__00000000_to_00000999.parquet"
    assert file_name("network_7", "blocks", Chunk(123_456_789, 123_456_800)) == (
        "network_7__blocks__123456789_to_123456800.parquet"
    )
    assert parse_file_name("monad__traces__00000000_to_00000001.parquet") == ("monad", "traces", Chunk(0, 1))
    for other in ("x.parquet", "monad__receipts__00000000_to_00000001.parquet",
                  ".monad__logs__00000000_to_00000001.parquet.abc.tmp", "monad__logs__0_to_1.parquet"):
        assert parse_file_name(other) is None


@given(
    chain=st.from_regex(r"[a-z0-9]+(_[a-z0-9]+){0,2}", fullmatch=True),
    dataset=st.sampled_from(DATASETS),
    start=st.integers(min_value=0, max_value=10**10),
    size=st.integers(min_value=1, max_value=10**6),
)
def test_file_names_round_trip(chain: str, dataset: Any, start: int, size: int) -> None:
    chunk = Chunk(start, start + size - 1)
    assert parse_file_name(file_name(chain, dataset, chunk)) == (chain, dataset, chunk)


def test_confirmed_head_rule() -> None:
    check_confirmed(Chunk(0, 100), 100)  # ending at the confirmed head is fine
    with pytest.raises(NotYetConfirmed, match=r"chunk 90..101 reaches past the confirmed head 100 \(1 block"):
        check_confirmed(Chunk(90, 101), 100)
    with pytest.raises(NotYetConfirmed, match="confirmed head -5"):
        check_confirmed(Chunk(0, 0), -5)
    assert issubclass(NotYetConfirmed, RetryableError)


@given(start=st.integers(0, 10**9), n=st.integers(1, 5000), batch=st.integers(1, 200),
       concurrency=st.integers(1, 16))
def test_rpc_batches_cover_the_chunk_in_whole_waves(start: int, n: int, batch: int, concurrency: int) -> None:
    from operators.cryo_ingest.engines.rpc import even_parts

    parts = even_parts(Chunk(start, start + n - 1), batch, concurrency)
    assert parts[0].start == start and parts[-1].end == start + n - 1
    assert all(b.start == a.end + 1 for a, b in itertools.pairwise(parts))
    sizes = [p.end - p.start + 1 for p in parts]
    assert max(sizes) <= batch
    assert set(sizes[:-1]) <= {sizes[0]} and sizes[-1] <= sizes[0]  # even, the last one shorter
    assert math.ceil(len(parts) / concurrency) == math.ceil(math.ceil(n / batch) / concurrency)


def test_a_chunk_of_250_at_50_by_4_is_eight_batches() -> None:
    from operators.cryo_ingest.engines.rpc import even_parts

    assert [p.end - p.start + 1 for p in even_parts(Chunk(1000, 1249), 50, 4)] == [32] * 7 + [26]
