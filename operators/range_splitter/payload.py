"""What a split task is asked to do (:class:`SplitJob`), read once from its task payload.

A backfill's parameters are a :class:`SplitJob`: the run shows them, and its split task's payload
carries them as ``{"event": <job>}``. The split cuts the range with :func:`split_range` and
emits one event per chunk; each carries ``chain_id``, ``chain``, ``datasets`` and ``engine`` on,
with the chunk's ``start`` and ``end`` (the job of the task it starts, see
:class:`operators.cryo_ingest.payload.IngestJob`). Pure.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from operators.range_splitter.split import Chunk, chunk_key, count_chunks, split_range
from tracekit.errors import ConfigError, first_problem


class SplitJob(BaseModel):
    """Blocks ``start_block..end_block`` of ``chain`` in aligned chunks of ``chunk_size`` (``chunks``
    of them), each to ingest with ``engine`` into ``datasets``."""

    model_config = ConfigDict(frozen=True)

    chain_id: StrictInt
    chain: StrictStr
    datasets: tuple[StrictStr, ...]
    start_block: StrictInt
    end_block: StrictInt
    chunk_size: StrictInt
    engine: StrictStr
    chunks: StrictInt

    @classmethod
    def of_range(cls, *, chain_id: int, chain: str, datasets: tuple[str, ...], start_block: int,
                 end_block: int, chunk_size: int, engine: str, max_chunks: int) -> SplitJob:
        """The job of a range; :class:`~operators.range_splitter.BadRange` when it cannot be cut
        (more than ``max_chunks`` chunks, ...)."""
        chunks = count_chunks(start_block, end_block, chunk_size, max_chunks=max_chunks)
        return cls(chain_id=chain_id, chain=chain, datasets=datasets, start_block=start_block,
                   end_block=end_block, chunk_size=chunk_size, engine=engine, chunks=chunks)

    def split(self) -> list[Chunk]:
        return split_range(self.start_block, self.end_block, self.chunk_size)

    def chunk_event(self, chunk: Chunk) -> tuple[str, dict[str, Any]]:
        """The partition key and the payload of ``chunk``'s event."""
        return chunk_key(self.chain, chunk), {
            "chain_id": self.chain_id, "chain": self.chain, "datasets": list(self.datasets),
            "engine": self.engine, "start": chunk.start, "end": chunk.end}


class SplitPayload(BaseModel):
    """A split task's payload (its job's ``config`` is not read)."""

    model_config = ConfigDict(frozen=True)

    event: SplitJob

    @classmethod
    def parse(cls, payload: Any) -> SplitPayload:
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            where, problem = first_problem(exc)
            raise ConfigError(f"range_splitter: bad task payload at {where}: {problem}") from exc
