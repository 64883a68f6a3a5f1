"""What a sql_transform task is asked to do, read once from its task payload. Pure.

``payload["config"]`` is the job's config (:class:`TransformConfig`: ``sql``, optional ``sort``);
``payload["params"]["inputs"]`` pins each input dataset to one version (:class:`PinnedInput`:
``{dataset_id: {"version": V, "table": "namespace.name", "snapshot_id": S}}``), which the
dispatcher puts there so that every task of a run reads the same snapshots. Other keys of the
payload (the triggering event, ...) are ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from tracekit.payloads import TaskPayload


class PinnedInput(BaseModel):
    """One input dataset at one version: its Iceberg table and the snapshot that version is."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: StrictInt = Field(ge=0)
    table: StrictStr = Field(pattern=r"^[^.\s]+\.[^.\s]+$")  # namespace.name
    snapshot_id: StrictInt

    @property
    def identifier(self) -> tuple[str, str]:
        namespace, name = self.table.split(".")
        return namespace, name


class TransformParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    inputs: dict[StrictStr, PinnedInput] = Field(default_factory=dict)


class TransformConfig(BaseModel):
    """The job's ``config``: one SELECT over its inputs (dataset ids as table names) and the
    columns to sort the result by."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sql: StrictStr = Field(min_length=1)
    sort: tuple[StrictStr, ...] = ()


class TransformPayload(TaskPayload):
    model_config = ConfigDict(frozen=True, extra="ignore")
    OPERATOR = "sql_transform"

    config: TransformConfig
    params: TransformParams = TransformParams()
