"""What a parquet_compact task is asked to do, read once from its task payload. Pure.

A run of the built-in ``compact`` DAG carries one partition of one dataset as its parameters
(:class:`CompactParams`): the dataset, the blocks its files cover (``start_block..end_block``,
within one partition: the range the commit replaces), the chain, and the version it reads, pinned
when the run started (``inputs: {dataset: {"version": V, "table": "ns.name", "snapshot_id": S}}``:
the commit refuses the run once that version is no longer current). Its task's payload is
``{"params": <params>, "config": <the job's config>}`` (a manual-kind run).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from tracekit.datasets import contract
from tracekit.errors import ContractError
from tracekit.payloads import TaskPayload

TABLE_NAME = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$"


class PinnedInput(BaseModel):
    """A dataset version a run reads: its number, its Iceberg table and snapshot."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: StrictInt = Field(ge=1)
    table: StrictStr = Field(pattern=TABLE_NAME)
    snapshot_id: StrictInt

    @property
    def identifier(self) -> tuple[str, str]:
        namespace, _, name = self.table.partition(".")
        return namespace, name


class CompactParams(BaseModel):
    """Rewrite the rows of blocks ``start_block..end_block`` (one partition's) of ``dataset`` at
    the pinned version ``inputs[dataset]`` as one file."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    dataset: StrictStr
    start_block: StrictInt = Field(ge=0)
    end_block: StrictInt = Field(ge=0)
    chain_id: StrictInt | None = Field(None, ge=0)
    chain: StrictStr | None = Field(None, pattern=r"^[a-z0-9]+(?:_[a-z0-9]+)*$")  # in file names
    inputs: dict[StrictStr, PinnedInput]

    @model_validator(mode="after")
    def _valid(self) -> CompactParams:
        if self.end_block < self.start_block:
            raise ValueError(f"end_block {self.end_block} is below start_block {self.start_block}")
        if self.dataset not in self.inputs:
            raise ValueError(f"inputs does not pin a version of {self.dataset!r}")
        try:
            width = contract(self.dataset).partition_width
        except ContractError as exc:
            raise ValueError(str(exc)) from exc
        if self.start_block // width != self.end_block // width:
            raise ValueError(f"blocks {self.start_block}..{self.end_block} span more than one partition "
                             f"({width} blocks wide)")
        return self

    @property
    def pinned(self) -> PinnedInput:
        return self.inputs[self.dataset]

    @property
    def file_prefix(self) -> str:
        """The chain's name in file names (``network_<id>`` when the run does not name it)."""
        if self.chain is not None:
            return self.chain
        return f"network_{self.chain_id}" if self.chain_id is not None else "chain"


class CompactPayload(TaskPayload):
    model_config = ConfigDict(frozen=True, extra="ignore")
    OPERATOR = "parquet_compact"

    params: CompactParams
