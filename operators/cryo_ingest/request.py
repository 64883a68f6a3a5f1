"""What one ingest call is asked to do (:class:`IngestRequest`) and what it staged (:class:`StagedFile`).

Pure: validation only, no I/O. A bad value raises :class:`~tracekit.errors.ConfigError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, get_args

from operators.cryo_ingest.columns import DATASETS, DEFAULT_DATASETS, Dataset
from operators.range_splitter import Chunk, chunk_key
from tracekit.errors import ConfigError, ObjectStoreError, TraceError
from tracekit.objects import check_prefix

Engine = Literal["rpc", "cryo"]
ENGINES: Final[tuple[Engine, ...]] = get_args(Engine)

# cryo 0.3.2's names for the chains it knows (the rest are ``network_{chain_id}``), plus Monad's.
CHAIN_NAMES: Final[dict[int, str]] = {
    1: "ethereum",
    5: "goerli",
    10: "optimism",
    56: "bnb",
    69: "optimism_kovan",
    100: "gnosis",
    137: "polygon",
    143: "monad",
    420: "optimism_goerli",
    1101: "polygon_zkevm",
    1442: "polygon_zkevm_testnet",
    8453: "base",
    10143: "monad_testnet",
    17000: "holesky",
    42161: "arbitrum",
    42170: "arbitrum_nova",
    43114: "avalanche",
    80001: "polygon_mumbai",
    84531: "base_goerli",
    7777777: "zora",
    11155111: "sepolia",
}

DEFAULT_CONFIRMATIONS: Final = 10
SPILL_BYTES: Final = 64 * 1024 * 1024  # a table this large (in Arrow) is encoded into a local file


def chain_name(chain_id: int) -> str:
    """The file-name prefix of a chain: its known name, else ``network_{chain_id}`` (as cryo names it)."""
    return CHAIN_NAMES.get(chain_id, f"network_{chain_id}")


def _positive_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive_float(name: str, value: Any) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True)
class IngestRequest:
    """One chunk of blocks to write as Parquet, one file per dataset, under the key ``prefix`` of
    an object store (``""`` or ending in ``/``; the store itself is passed to ``ingest_chunk``).
    ``datasets`` defaults to blocks, transactions and logs; ``traces`` is opt-in.

    ``confirmed_head``: the highest block the caller considers final (node head minus
    confirmations, see :func:`~operators.cryo_ingest.head.confirmed_head`). When None, the
    operator asks the node and subtracts ``confirmations``. A chunk ending above it is refused
    before anything is read. ``chain`` defaults to :func:`chain_name` of ``chain_id``.

    At most ``batch_blocks`` blocks go in one JSON-RPC batch and ``concurrency`` batches are in flight
    (``rpc`` engine; for ``cryo`` it is its ``max_concurrent_requests``). Rate-limited requests
    are retried ``rate_limit_retries`` times with exponential backoff from ``backoff_base_s`` up to
    ``backoff_max_s`` seconds (jittered), then :class:`~operators.cryo_ingest.errors.RateLimited`.
    A table whose Arrow size reaches ``spill_bytes`` (0: every table) is encoded into a local
    temporary file and uploaded from there (multipart on S3 when large) instead of from memory.
    """

    rpc_url: str
    chain_id: int
    chunk: Chunk
    prefix: str = ""
    datasets: tuple[Dataset, ...] = DEFAULT_DATASETS
    engine: Engine = "rpc"
    chain: str = ""
    confirmed_head: int | None = None
    confirmations: int = DEFAULT_CONFIRMATIONS
    batch_blocks: int = 50
    concurrency: int = 4
    rate_limit_retries: int = 8
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    timeout_s: float = 30.0
    spill_bytes: int = SPILL_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.rpc_url, str) or not self.rpc_url.startswith(("http://", "https://")):
            raise ConfigError(f"rpc_url must be an http(s):// URL, got {self.rpc_url!r}")
        _positive_int("chain_id", self.chain_id, 1)
        if not isinstance(self.chunk, Chunk):
            raise ConfigError(f"chunk must be an operators.range_splitter.Chunk, got {self.chunk!r}")
        if not isinstance(self.prefix, str) or (self.prefix and not self.prefix.endswith("/")):
            raise ConfigError(f"prefix must be '' or a key prefix ending in '/', got {self.prefix!r}")
        try:
            check_prefix(self.prefix)
        except ObjectStoreError as exc:
            raise ConfigError(f"prefix {self.prefix!r} is not a valid key prefix: {exc}") from exc
        datasets = (self.datasets,) if isinstance(self.datasets, str) else tuple(self.datasets)
        unknown = [d for d in datasets if d not in DATASETS]
        if unknown or not datasets or len(set(datasets)) != len(datasets):
            raise ConfigError(
                f"datasets must be distinct names among {', '.join(DATASETS)}, got {list(datasets)!r}"
            )
        object.__setattr__(self, "datasets", tuple(d for d in DATASETS if d in datasets))
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not self.chain:
            object.__setattr__(self, "chain", chain_name(self.chain_id))
        chunk_key(self.chain, self.chunk)  # validates the chain name
        if self.confirmed_head is not None and (
            isinstance(self.confirmed_head, bool) or not isinstance(self.confirmed_head, int)
        ):
            raise ConfigError(f"confirmed_head must be an integer or None, got {self.confirmed_head!r}")
        _positive_int("confirmations", self.confirmations, 0)
        _positive_int("batch_blocks", self.batch_blocks, 1)
        _positive_int("concurrency", self.concurrency, 1)
        _positive_int("rate_limit_retries", self.rate_limit_retries, 0)
        _positive_float("backoff_base_s", self.backoff_base_s)
        _positive_float("backoff_max_s", self.backoff_max_s)
        _positive_float("timeout_s", self.timeout_s)
        _positive_int("spill_bytes", self.spill_bytes, 0)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (e.g. a task payload); :meth:`from_json` reads it back."""
        data = asdict(self)
        data["chunk"] = {"start": self.chunk.start, "end": self.chunk.end}
        data["datasets"] = list(self.datasets)
        return data

    @classmethod
    def from_json(cls, data: Any) -> IngestRequest:
        try:
            values = dict(data)
            chunk = values.pop("chunk")
            values["chunk"] = Chunk(int(chunk["start"]), int(chunk["end"]))
            values["datasets"] = tuple(values.get("datasets", DEFAULT_DATASETS))
            return cls(**values)
        except TraceError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid ingest request: {exc!r}") from exc


@dataclass(frozen=True)
class StagedFile:
    """One Parquet file put (whole) into the object store: its key, rows, size and sha256 (hex)."""

    dataset: Dataset
    key: str
    rows: int
    bytes: int
    sha256: str

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]
