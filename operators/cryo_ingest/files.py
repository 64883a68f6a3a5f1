"""Dataset file names and atomic Parquet writes into a staging directory.

Names follow cryo: ``{chain}__{dataset}__{start:08d}_to_{end:08d}.parquet`` with an INCLUSIVE end.
A file is written under a hidden temporary name in the same directory, flushed to disk, then
renamed, so a reader never sees a half-written file; all the datasets of one call are renamed
only once every one of them has been written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Final, cast

import pyarrow as pa
import pyarrow.parquet as pq

from operators.cryo_ingest.columns import DATASETS, SCHEMAS, Dataset
from operators.cryo_ingest.request import StagedFile
from operators.range_splitter import Chunk

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


def parquet_bytes(table: pa.Table) -> bytes:
    """The Parquet encoding of ``table`` (the same settings for every engine)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    return bytes(sink.getvalue())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tables(
    tables: Mapping[Dataset, pa.Table], output_dir: Path, chain: str, chunk: Chunk
) -> list[StagedFile]:
    """Write each table to its dataset file in ``output_dir`` (created if missing), atomically.

    Existing files of the same name are replaced (a re-run writes the same content). Tables must
    have their dataset's schema exactly (see :mod:`operators.cryo_ingest.columns`).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, Path, StagedFile]] = []
    try:
        for dataset, table in tables.items():
            if not table.schema.equals(SCHEMAS[dataset]):
                raise ValueError(f"{dataset} table does not have the dataset's schema: {table.schema}")
            final = output_dir / file_name(chain, dataset, chunk)
            tmp = output_dir / f".{final.name}.{uuid.uuid4().hex}.tmp"
            data = parquet_bytes(table)
            with open(tmp, "wb") as out:
                pending.append((tmp, final, StagedFile(dataset, final, table.num_rows, len(data),
                                                       hashlib.sha256(data).hexdigest())))
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        for tmp, final, _ in pending:
            os.replace(tmp, final)
    finally:
        for tmp, _, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    _fsync_dir(output_dir)
    return [staged for _, _, staged in pending]
