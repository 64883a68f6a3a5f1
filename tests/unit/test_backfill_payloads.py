"""A backfill's parameters on their way to an ingest: the split job (the run's parameters), the
chunk events it emits, each read back as an ingest task's payload, each an ingest request of its
chunk; bad payloads are refused with one line naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.cryo_ingest import DATASETS, DEFAULT_DATASETS, IngestPayload
from operators.range_splitter import BadRange, Chunk, SplitJob, SplitPayload, split_range
from tracekit.errors import ConfigError

URL = "http://127.0.0.1:8545"


def job(**kw: Any) -> SplitJob:
    args: dict[str, Any] = {"chain_id": 10143, "chain": "monad_testnet", "datasets": ("blocks", "logs"),
                            "start_block": 0, "end_block": 99, "chunk_size": 10, "engine": "rpc",
                            "max_chunks": 100_000}
    return SplitJob.of_range(**{**args, **kw})


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=5_000),
       st.integers(min_value=1, max_value=1_000))
def test_every_chunk_event_reads_back_as_the_ingest_of_that_chunk(start: int, length: int, size: int) -> None:
    split = job(start_block=start, end_block=start + length, chunk_size=size)
    payload = {"event": split.model_dump(mode="json"), "config": {"chunk_size": 1000}}
    read = SplitPayload.parse(payload).event
    assert read == split
    chunks = read.split()
    assert read.partition_width == 10_000  # the contracts' truncate[10000](block_number)
    assert chunks == split_range(start, start + length, size, partition_width=10_000)
    assert all(c.start // 10_000 == c.end // 10_000 for c in chunks)  # one partition per file
    assert read.chunks == len(chunks)
    for chunk in chunks:
        key, event = read.chunk_event(chunk)
        assert key == f"monad_testnet__{chunk.start:08d}_to_{chunk.end:08d}"
        ingest = IngestPayload.parse({"event": event, "dataset_id": "backfill.chunks", "partition_key": key,
                                      "config": {"engine": "cryo", "datasets": list(DATASETS)}})
        request = ingest.request(rpc_url=URL, prefix="_staging/r/t.1/", confirmations=3)
        assert request.chunk == chunk
        assert (request.chain_id, request.chain, request.datasets, request.engine) == (
            10143, "monad_testnet", ("blocks", "logs"), "rpc")


def test_chunks_are_cut_where_a_bucket_would_cross_a_partition() -> None:
    split = job(start_block=8_000, end_block=17_999, chunk_size=3_000)
    assert split.split() == [Chunk(8_000, 8_999), Chunk(9_000, 9_999), Chunk(10_000, 11_999),
                             Chunk(12_000, 14_999), Chunk(15_000, 17_999)]
    assert split.chunks == 5
    assert job(start_block=0, end_block=24_999, chunk_size=50_000).split() == [
        Chunk(0, 9_999), Chunk(10_000, 19_999), Chunk(20_000, 24_999)]  # one chunk per partition at most
    stored = {**split.model_dump(mode="json")}
    del stored["partition_width"]  # a job stored before the field existed: the contracts' width
    assert SplitPayload.parse({"event": stored}).event.split() == split.split()


def test_the_job_config_fills_in_what_the_event_leaves_out() -> None:
    bare = {"event": {"chain_id": 10143, "start": 5, "end": 9}}
    request = IngestPayload.parse(bare).request(rpc_url=URL, prefix="", confirmations=0)
    assert (request.chunk, request.datasets, request.engine, request.chain) == (
        Chunk(5, 9), DEFAULT_DATASETS, "rpc", "monad_testnet")  # no traces unless asked for
    configured = IngestPayload.parse({**bare, "config": {"engine": "cryo", "datasets": ["logs"]}})
    assert configured.datasets == ("logs",)
    assert configured.request(rpc_url=URL, prefix="", confirmations=0).engine == "cryo"


def test_too_many_chunks_is_refused_before_anything_is_stored() -> None:
    with pytest.raises(BadRange, match="more than the limit of 5"):
        job(start_block=0, end_block=99, chunk_size=10, max_chunks=5)


@pytest.mark.parametrize(("payload", "message"), [
    ({}, "range_splitter: bad task payload at event: Field required"),
    ({"event": {**job().model_dump(mode="json"), "start_block": True}},
     "range_splitter: bad task payload at event.start_block: Input should be a valid integer"),
    ({"params": {}}, "range_splitter: bad task payload at event: Field required"),
])
def test_a_bad_split_payload_is_one_config_error(payload: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SplitPayload.parse(payload)
    assert str(info.value) == message


@pytest.mark.parametrize(("payload", "message"), [
    ({"event": {"start": 0, "end": 9}}, "cryo_ingest: bad task payload at event.chain_id: Field required"),
    ({"event": {"chain_id": 1, "start": "0", "end": 9}},
     "cryo_ingest: bad task payload at event.start: Input should be a valid integer"),
    ({"event": {"chain_id": 1, "start": 0, "end": 9, "engine": "spark"}},
     "cryo_ingest: bad task payload at event.engine: Input should be 'rpc' or 'cryo'"),
    ({"event": {"chain_id": 1, "start": 0, "end": 9}, "config": {"datasets": ["blocks", "receipts"]}},
     "cryo_ingest: bad task payload at config.datasets.1: Input should be 'blocks', 'transactions',"
     " 'logs' or 'traces'"),
])
def test_a_bad_ingest_payload_is_one_config_error(payload: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        IngestPayload.parse(payload)
    assert str(info.value) == message
