"""The Aggregator: finalization, blocks past the finality depth from the hot tables into the cold
(Iceberg) tables, in deterministic batches of whole aligned block ranges.

- :mod:`.plan` (pure): which batch is next from (cold watermark, hot head, finality depth, batch
  size); the watermark after a batch; below which block hot rows may be pruned.
- :mod:`.aggregate` (I/O): one batch's hot rows, canonical only and checked (:mod:`.check`),
  converted to each dataset's contract (:mod:`.transform`) and encoded as Parquet files.
- :mod:`.payload`: the task's payload (the run's batch, the job's datasets).

The query service reads the hot rows above the cold watermark with :func:`read_hot` (the same
reads and conversion, in its own transaction, without the finality checks).

The dispatcher runs it from the built-in ``finalize`` DAG (``dispatcher/dags/finalize.yaml``) and
commits each run's files as the batch's range of the chain datasets; see docs/finalization.md.
"""

from operators.aggregator.aggregate import BatchFile, aggregate_batch, read_hot
from operators.aggregator.check import HotGap, HotInconsistent, HotNotReady, NotYetFinal
from operators.aggregator.payload import AggregateConfig, AggregatePayload, FinalizeBatch
from operators.aggregator.plan import (
    BadBatch,
    Batch,
    advance,
    batch_of,
    final_head,
    next_batches,
    prune_below,
)
from operators.aggregator.transform import DATASETS, BadHotRow, dataset_table

__all__ = [
    "DATASETS",
    "AggregateConfig",
    "AggregatePayload",
    "BadBatch",
    "BadHotRow",
    "Batch",
    "BatchFile",
    "FinalizeBatch",
    "HotGap",
    "HotInconsistent",
    "HotNotReady",
    "NotYetFinal",
    "advance",
    "aggregate_batch",
    "batch_of",
    "dataset_table",
    "final_head",
    "next_batches",
    "prune_below",
    "read_hot",
]
