"""Dataset file names, and Parquet files put into the object store under an attempt's prefix.

Names follow cryo: ``{chain}__{dataset}__{start:08d}_to_{end:08d}.parquet`` with an INCLUSIVE end.
A file holds its dataset's rows exactly as the dataset's contract says (:func:`file_table`: the
engine's table sorted, then :func:`tracekit.datasets.conform`-ed: the contract's columns, order and
Iceberg-compatible types), so the committer can add it to the dataset's Iceberg table as it is.
Every table of a call is encoded first (in memory, or into a local temporary file when its Arrow
size reaches ``spill_bytes``: S3 then gets a large one as a multipart upload) and hashed (sha256); only then
are the files put, each whole (a reader never sees part of one). A table that does not have its
dataset's schema stops the call before anything is put. Both engines end here, so their files are
the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import pyarrow as pa
import pyarrow.parquet as pq

from operators.cryo_ingest.columns import DATASETS, SORT_KEYS, Dataset, file_schema
from operators.cryo_ingest.request import SPILL_BYTES, StagedFile
from operators.range_splitter import Chunk
from tracekit.datasets import conform, contract
from tracekit.objects import ObjectStore

COMPRESSION: Final = "zstd"
ROW_GROUP_ROWS: Final = 256 * 1024
_NAME = re.compile(
    r"(?P<chain>[a-z0-9]+(?:_[a-z0-9]+)*)__(?P<dataset>[a-z_]+)__(?P<start>\d{8,})_to_(?P<end>\d{8,})\.parquet"
)


def file_name(chain: str, dataset: Dataset, chunk: Chunk) -> str:
    """``{chain}__{dataset}__{start:08d}_to_{end:08d}.parquet`` (inclusive end, as cryo names files)."""
    return f"{chain}__{dataset}__{chunk.start:08d}_to_{chunk.end:08d}.parquet"


def parse_file_name(name: str) -> tuple[str, Dataset, Chunk] | None:
    """``(chain, dataset, chunk)`` of a dataset file name, None for any other name."""
    match = _NAME.fullmatch(name)
    if match is None or match["dataset"] not in DATASETS:
        return None
    return match["chain"], cast(Dataset, match["dataset"]), Chunk(int(match["start"]), int(match["end"]))


def file_table(table: pa.Table, dataset: Dataset) -> pa.Table:
    """What ``dataset``'s file holds of an engine's ``table``: its rows in cryo's order (stable,
    nulls first, as cryo's polars sort: a transaction's traces keep the node's order), conformed
    to the dataset's contract. A value that does not fit or a null in a required column is a
    :class:`~tracekit.errors.ConformError` naming the column and row."""
    ordered = table.sort_by([(key, "ascending", "at_start") for key in SORT_KEYS[dataset]])
    return conform(ordered, contract(dataset))


def parquet_bytes(table: pa.Table) -> bytes:
    """The Parquet encoding of ``table`` (the same settings for every engine)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    return bytes(sink.getvalue())


def write_parquet_file(table: pa.Table, path: Path) -> str:
    """Encode ``table`` into ``path`` (the same bytes as :func:`parquet_bytes`); its sha256."""
    pq.write_table(table, str(path), compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Encoded:
    staged: StagedFile
    content: bytes | Path  # in memory, or spilled to a local file


def put_tables(
    tables: Mapping[Dataset, pa.Table], store: ObjectStore, prefix: str, chain: str, chunk: Chunk, *,
    spill_bytes: int = SPILL_BYTES,
) -> list[StagedFile]:
    """Put each table as its dataset's file under ``prefix`` in ``store``; see the module doc.

    An object of the same key is replaced (a re-run writes the same bytes). Tables must have their
    dataset's file schema exactly (:func:`file_table` makes it), else ValueError, nothing put.
    """
    for dataset, table in tables.items():
        if not table.schema.equals(file_schema(dataset)):
            raise ValueError(f"{dataset} table does not have the dataset's schema: {table.schema}")
    with contextlib.ExitStack() as cleanup:
        spill: Path | None = None
        encoded: list[_Encoded] = []
        for dataset, table in tables.items():
            name = file_name(chain, dataset, chunk)
            if table.nbytes >= spill_bytes:
                if spill is None:
                    spill = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="trace-ingest-")))
                path = spill / name
                digest = write_parquet_file(table, path)
                staged = StagedFile(dataset, prefix + name, table.num_rows, path.stat().st_size, digest)
                encoded.append(_Encoded(staged, path))
            else:
                data = parquet_bytes(table)
                staged = StagedFile(dataset, prefix + name, table.num_rows, len(data),
                                    hashlib.sha256(data).hexdigest())
                encoded.append(_Encoded(staged, data))
        for item in encoded:
            if isinstance(item.content, Path):
                store.put_file(item.staged.key, item.content)
            else:
                store.put(item.staged.key, item.content)
        return [item.staged for item in encoded]
