"""What an aggregator task is asked to do, read once from its task payload.

A run of the built-in ``finalize`` DAG carries its batch as the run's parameters
(:class:`FinalizeBatch`: chain, ``start_block``, ``end_block``, the range the commit replaces); its
task's payload is ``{"params": <batch>, "config": <the job's config>}`` (a manual-kind run). The
job's config names the datasets (:class:`AggregateConfig`). Pure.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from operators.aggregator.plan import Batch
from operators.aggregator.transform import DATASETS
from tracekit.payloads import TaskPayload


class FinalizeBatch(BaseModel):
    """Blocks ``start_block..end_block`` (inclusive) of chain ``chain_id`` (named ``chain`` in file
    names), to move from the hot tables into the cold ones."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    chain_id: StrictInt = Field(ge=0)
    chain: StrictStr = Field(pattern=r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
    start_block: StrictInt = Field(ge=0)
    end_block: StrictInt = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> FinalizeBatch:
        if self.end_block < self.start_block:
            raise ValueError(f"end_block {self.end_block} is below start_block {self.start_block}")
        return self

    @property
    def batch(self) -> Batch:
        return Batch(self.start_block, self.end_block)


class AggregateConfig(BaseModel):
    """The aggregator job's ``config``: which hot datasets it writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    datasets: tuple[StrictStr, ...] = DATASETS

    @model_validator(mode="after")
    def _known(self) -> AggregateConfig:
        unknown = sorted(set(self.datasets) - set(DATASETS))
        if unknown:
            raise ValueError(f"no hot table holds {', '.join(unknown)} (hot datasets: {', '.join(DATASETS)})")
        if not self.datasets:
            raise ValueError("datasets is empty")
        return self


class AggregatePayload(TaskPayload):
    model_config = ConfigDict(frozen=True, extra="ignore")
    OPERATOR = "aggregator"

    params: FinalizeBatch
    config: AggregateConfig = AggregateConfig()

