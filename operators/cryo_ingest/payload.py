"""What an ingest task is asked to do, read once from its task payload (:class:`IngestPayload`).

An ingest task starts on a chunk event of a split (:class:`IngestJob`, see
:mod:`operators.range_splitter.payload`); its job's ``config`` gives the defaults of what the event
leaves out. :meth:`IngestPayload.request` turns it into the :class:`IngestRequest` of one chunk.
Pure: validation only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from operators.cryo_ingest.columns import DEFAULT_DATASETS, Dataset
from operators.cryo_ingest.request import Engine, IngestRequest
from operators.range_splitter import Chunk
from tracekit.payloads import TaskPayload


class IngestJob(BaseModel):
    """One chunk, blocks ``start..end`` (inclusive) of chain ``chain_id``: a split's chunk event."""

    model_config = ConfigDict(frozen=True)

    chain_id: StrictInt
    start: StrictInt
    end: StrictInt
    chain: StrictStr | None = None  # the file-name prefix; default: the chain's known name
    datasets: tuple[Dataset, ...] | None = None  # default: the job's config
    engine: Engine | None = None  # default: the job's config


class IngestConfig(BaseModel):
    """The ingest job's ``config`` (its DAG file): what a chunk event does not say."""

    model_config = ConfigDict(frozen=True)

    datasets: tuple[Dataset, ...] | None = None
    engine: Engine | None = None


class IngestPayload(TaskPayload):
    """An ingest task's payload: the chunk event that started it and its job's config."""

    OPERATOR = "cryo_ingest"

    event: IngestJob
    config: IngestConfig = IngestConfig()


    @property
    def datasets(self) -> tuple[Dataset, ...]:
        """The datasets the event or else the config names (none: the default three, no traces)."""
        return self.event.datasets or self.config.datasets or ()

    @property
    def chunk(self) -> Chunk:
        return Chunk(self.event.start, self.event.end)

    def request(self, *, rpc_url: str, prefix: str, confirmations: int) -> IngestRequest:
        """The chunk's ingest under the key ``prefix`` (of the worker's store) from ``rpc_url``."""
        return IngestRequest(
            rpc_url=rpc_url, chain_id=self.event.chain_id, chunk=self.chunk, prefix=prefix,
            datasets=self.datasets or DEFAULT_DATASETS,
            engine=self.event.engine or self.config.engine or "rpc",
            chain=self.event.chain or "", confirmations=confirmations,
        )
