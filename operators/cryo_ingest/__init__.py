"""Backfill ingest: one chunk of blocks -> Parquet files of ``blocks``, ``transactions``, ``logs``
and, opt-in, ``traces``, put into an object store under a key prefix.

Two engines write identical files (same names, columns, Arrow types and row order): ``rpc``
(native async JSON-RPC batches, :mod:`.engines.rpc`) and ``cryo`` (the PyPI cryo 0.3.2 bindings,
:mod:`.engines.cryo`). They extract cryo's columns (:mod:`.columns`); the files hold them as each
dataset's contract says (``schemas/datasets``: its columns, order and Iceberg-compatible types);
the file names are cryo's (:mod:`.files`). See docs/backfill-operators.md.

    files = await ingest_chunk(IngestRequest(rpc_url, chain_id, Chunk(0, 999), "_staging/x/"), store)
"""

from __future__ import annotations

from operators.cryo_ingest.columns import DATASETS, DEFAULT_DATASETS, SCHEMAS, Dataset, file_schema
from operators.cryo_ingest.engines.cryo import CryoSchemaMismatch
from operators.cryo_ingest.engines.rpc import BlockMissing, ChainMoved
from operators.cryo_ingest.errors import CryoFailed, NotYetConfirmed, RateLimited
from operators.cryo_ingest.files import file_name, parse_file_name
from operators.cryo_ingest.head import check_confirmed, confirmed_head
from operators.cryo_ingest.ingest import ingest_chunk
from operators.cryo_ingest.payload import IngestConfig, IngestJob, IngestPayload
from operators.cryo_ingest.request import (
    CHAIN_NAMES,
    DEFAULT_CONFIRMATIONS,
    ENGINES,
    Engine,
    IngestRequest,
    StagedFile,
    chain_name,
)
from operators.range_splitter import Chunk

__all__ = [
    "CHAIN_NAMES",
    "DATASETS",
    "DEFAULT_CONFIRMATIONS",
    "DEFAULT_DATASETS",
    "ENGINES",
    "SCHEMAS",
    "BlockMissing",
    "ChainMoved",
    "Chunk",
    "CryoFailed",
    "CryoSchemaMismatch",
    "Dataset",
    "Engine",
    "IngestConfig",
    "IngestJob",
    "IngestPayload",
    "IngestRequest",
    "NotYetConfirmed",
    "RateLimited",
    "StagedFile",
    "chain_name",
    "check_confirmed",
    "confirmed_head",
    "file_name",
    "file_schema",
    "ingest_chunk",
    "parse_file_name",
]
