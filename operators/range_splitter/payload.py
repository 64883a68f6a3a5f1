"""What a split task is asked to do (:class:`SplitJob`), read once from its task payload.

A backfill's parameters are a :class:`SplitJob`: the run shows them, and its split task's payload
carries them as ``{"event": <job>}``. The split cuts the range with :func:`split_range` and
emits one event per chunk; each carries ``chain_id``, ``chain``, ``datasets`` and ``engine`` on,
with the chunk's ``start`` and ``end`` (the job of the task it starts, see
:class:`operators.cryo_ingest.payload.IngestJob`). Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from operators.range_splitter.split import Chunk, chunk_key, count_chunks, split_range
from tracekit.datasets import DEFAULT_PARTITION_WIDTH, contract
from tracekit.payloads import TaskPayload


def partition_width_of(datasets: Sequence[str]) -> int:
    """The block width a chunk must stay within so that it lies in one partition of every
    dataset's table: the greatest common divisor of their contracts' partition widths."""
    return math.gcd(*(contract(name).partition_width for name in datasets)) or DEFAULT_PARTITION_WIDTH


class SplitJob(BaseModel):
    """Blocks ``start_block..end_block`` of ``chain`` in aligned chunks of at most ``chunk_size``
    blocks, also cut at multiples of ``partition_width`` so that each chunk (and file) lies in one
    partition of the datasets' tables (``chunks`` of them), each to ingest with ``engine`` into
    ``datasets``."""

    model_config = ConfigDict(frozen=True)

    chain_id: StrictInt
    chain: StrictStr
    datasets: tuple[StrictStr, ...]
    start_block: StrictInt
    end_block: StrictInt
    chunk_size: StrictInt
    engine: StrictStr
    chunks: StrictInt
    partition_width: StrictInt = DEFAULT_PARTITION_WIDTH  # jobs stored before it was a field

    @classmethod
    def of_range(cls, *, chain_id: int, chain: str, datasets: tuple[str, ...], start_block: int,
                 end_block: int, chunk_size: int, engine: str, max_chunks: int) -> SplitJob:
        """The job of a range, cut at the partitions of the datasets' contracts
        (:func:`partition_width_of`); :class:`~operators.range_splitter.BadRange` when it cannot be
        cut (more than ``max_chunks`` chunks, ...)."""
        width = partition_width_of(datasets)
        chunks = count_chunks(start_block, end_block, chunk_size, partition_width=width,
                              max_chunks=max_chunks)
        return cls(chain_id=chain_id, chain=chain, datasets=datasets, start_block=start_block,
                   end_block=end_block, chunk_size=chunk_size, engine=engine, chunks=chunks,
                   partition_width=width)

    def split(self) -> list[Chunk]:
        return split_range(self.start_block, self.end_block, self.chunk_size,
                           partition_width=self.partition_width)

    def chunk_event(self, chunk: Chunk) -> tuple[str, dict[str, Any]]:
        """The partition key and the payload of ``chunk``'s event."""
        return chunk_key(self.chain, chunk), {
            "chain_id": self.chain_id, "chain": self.chain, "datasets": list(self.datasets),
            "engine": self.engine, "start": chunk.start, "end": chunk.end}


class SplitPayload(TaskPayload):
    """A split task's payload (its job's ``config`` is not read)."""

    OPERATOR = "range_splitter"

    event: SplitJob

