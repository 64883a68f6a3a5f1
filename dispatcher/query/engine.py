"""The query service's engine: one user SELECT over views that span hot (Postgres) and cold
(Iceberg) data as one table each, in an in-process DuckDB, one connection per query.

1. **Gate** (:func:`tracekit.sqlgate.check_sql`, on the parse tree): exactly one read-only
   SELECT/WITH, over the views only; a refusal names its rule and where (docs/sql-gate.md).
2. **Pin**, in ONE read-only REPEATABLE READ transaction (:func:`_pin`): the org's pointer set
   (the newest, or ``at``), the versions it names and their cold watermarks, and the hot rows above
   each chain dataset's boundary. Finalization prunes hot rows only after the cold version holding
   them is current, so the transaction sees every block either in the pinned cold versions or in
   the hot tables: no gap and no double count, also while finalization and cutovers run. A query
   ``at`` an older pointer set reads that set's committed versions only (what it pinned then is
   gone from the hot tables), so it answers the same every time.
3. **Sources**: cold = the data files of each pinned Iceberg snapshot (listed once per snapshot
   and cached: a version never changes), opened as a pyarrow dataset (projection and filters
   pushed down by DuckDB); the files and hot rows a query can need are cut by the block bounds its
   WHERE implies (:mod:`.bounds`). Hot = Arrow tables read with the aggregator's reads
   (:func:`operators.aggregator.read_hot`: canonical rows, converted to the contracts).
4. **Run**: the views are made, then the connection is locked down (no external access, the
   configuration locked, memory and thread limits), the statement runs under a time limit (the
   query is interrupted, not left running) and at most ``rows`` rows come back.

Org scoping: the chain and derived datasets are the org's (its pointer sets), ``labels`` and
``alerts`` its own rows; ``prices`` are global.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import sqlglot
from psycopg import IsolationLevel
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from dispatcher.query.bounds import EVERYTHING, Range, block_bounds
from operators.aggregator import DATASETS as HOT_DATASETS
from operators.aggregator import BadHotRow, read_hot
from tracekit.datasets import contract, load_contracts
from tracekit.db import connect
from tracekit.db.queries import load_queries
from tracekit.errors import ConfigError, ConformError, TraceError
from tracekit.objects import S3Config
from tracekit.sqlgate import SqlRefused, check_sql

_SQL = load_queries("dispatcher.sql", "query.sql")
CHAIN_VIEWS = ("blocks", "transactions", "logs", "traces", "transfers", "stake_changes")
STATE_VIEWS = ("prices", "labels", "alerts")
MAX_BLOCK = 2**62


class QueryRefused(ConfigError):
    """The statement is not one SELECT over the views."""


class QueryFailed(ConfigError):
    """DuckDB refused or failed the statement (a column that does not exist, a type error...)."""


class QueryTimeout(TraceError):
    """The statement ran past its time limit and was interrupted."""


@dataclass(frozen=True, slots=True)
class Limits:
    rows: int = 10_000
    timeout_s: float = 30.0
    memory: str = "1GB"
    threads: int = 2


@dataclass(frozen=True, slots=True)
class QueryResult:
    table: pa.Table
    truncated: bool  # more rows than the limit: the first ``rows`` came back
    pointer_set: int  # the pinned set (0: no version yet)
    versions: Mapping[str, int]  # dataset -> version read (cold)
    boundaries: Mapping[str, int | None]  # chain dataset -> last cold block read (hot above it)
    hot_rows: Mapping[str, int]  # chain dataset -> hot rows read
    views: tuple[str, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class ColdFile:
    path: str  # as the filesystem opens it
    low: int | None  # block_number bounds from the file's statistics (None: unknown or no column)
    high: int | None
    rows: int


@dataclass(slots=True)
class _Pinned:
    seq: int
    versions: dict[str, int] = field(default_factory=dict)
    snapshots: dict[str, int] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)
    hot: dict[str, pa.Table] = field(default_factory=dict)
    state: dict[str, pa.Table] = field(default_factory=dict)
    boundaries: dict[str, int | None] = field(default_factory=dict)
    cold: dict[str, list[ColdFile]] = field(default_factory=dict)


class QueryEngine:
    """Runs users' SQL for one org (see the module doc). Thread-safe: each query has its own
    DuckDB connection; the file lists of pinned snapshots are cached across queries."""

    def __init__(self, database_url: str, org_id: str, chain_id: int,
                 open_catalog: Callable[[], Catalog] | None, filesystem: Callable[[], Any] | None = None, *,
                 limits: Limits | None = None) -> None:
        self.url = database_url
        self.org = org_id
        self.chain_id = chain_id
        self._open_catalog = open_catalog
        self._filesystem = filesystem
        self.limits = limits or Limits()
        self._catalog: Catalog | None = None
        self._fs: Any = None
        self._files: dict[tuple[str, int], list[ColdFile]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    # -- the one call ---------------------------------------------------------------------------

    def run(self, sql: str, *, at: int | None = None, limits: Limits | None = None, actor: str = "",
            door: str = "", params: Mapping[str, Any] | None = None) -> QueryResult:
        """The rows of ``sql`` (at most ``limits.rows``); raises :class:`QueryRefused`,
        :class:`QueryFailed` or :class:`QueryTimeout` (one line each). ``params`` bind DuckDB's
        ``$name`` placeholders. With an ``actor``, the query is written to ``state.query_log`` (what
        it read, rows, duration; or why it failed)."""
        started = time.monotonic()
        try:
            result = self._run(sql, at, limits or self.limits, params)
        except (QueryRefused, QueryFailed, QueryTimeout) as exc:
            if actor:
                status = {QueryRefused: "refused", QueryFailed: "failed", QueryTimeout: "timeout"}[type(exc)]
                self._log(actor, door, sql, status, str(exc), None, time.monotonic() - started)
            raise
        if actor:
            self._log(actor, door, sql, "ok", None, result, result.seconds)
        return result

    def _log(self, actor: str, door: str, sql: str, status: str, error: str | None,
             result: QueryResult | None, seconds: float) -> None:
        with connect(self.url, autocommit=True) as conn:
            conn.execute(_SQL.sql("log"), {
                "org": self.org, "actor": actor[:200], "door": door or "api", "sql": sql[:20_000],
                "status": status, "error": error, "pointer_set": result.pointer_set if result else None,
                "versions": Jsonb(dict(result.versions) if result else {}),
                "datasets": list(result.views) if result else [],
                "rows": result.table.num_rows if result else None,
                "truncated": bool(result and result.truncated), "ms": seconds * 1000})

    def _run(self, sql: str, at: int | None, limits: Limits, params: Mapping[str, Any] | None) -> QueryResult:
        started = time.monotonic()
        known = {*CHAIN_VIEWS, *STATE_VIEWS, *self._derived_names()}
        try:
            gated = check_sql(sql, allowed_tables=known)
        except SqlRefused as exc:
            raise QueryRefused(str(exc)) from exc
        tree = sqlglot.parse_one(sql, read="duckdb")
        by_lower = {name.lower(): name for name in known}
        reads = sorted({by_lower[t.lower()] for t in gated.tables if t.lower() in by_lower})
        bounds = block_bounds(tree, CHAIN_VIEWS) if isinstance(tree, sqlglot.exp.Expression) else {}
        pinned = self._pin(reads, bounds, at)
        table, truncated = self._execute(sql, reads, pinned, limits, params)
        versions = {d: v for d, v in pinned.versions.items() if d in reads}
        return QueryResult(table, truncated, pinned.seq, versions,
                           {d: pinned.boundaries.get(d) for d in reads if d in CHAIN_VIEWS},
                           {d: t.num_rows for d, t in pinned.hot.items()}, tuple(reads),
                           time.monotonic() - started)

    # -- pinning ----------------------------------------------------------------------------------

    def _derived_names(self) -> set[str]:
        with connect(self.url) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_SQL.sql("derived_datasets"), {"org": self.org})
            return {r["dataset_id"] for r in cur.fetchall()}

    def _pin(self, reads: Sequence[str], bounds: Mapping[str, Range], at: int | None) -> _Pinned:
        with connect(self.url) as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                if at is None:
                    cur.execute(_SQL.sql("newest_set"), {"org": self.org})
                else:
                    cur.execute(_SQL.sql("set_at"), {"org": self.org, "seq": at})
                row = cur.fetchone()
                if row is None and at is not None:
                    raise QueryRefused(f"org {self.org!r} has no pointer set {at}")
                pinned = _Pinned(int(row["seq"]) if row else 0)
                pointers = {k: int(v) for k, v in (row["pointers"] if row else {}).items()}
                pinned.watermarks = {k: int(v) for k, v in (row["watermarks"] if row else {}).items()}
                datasets = sorted(d for d in reads if d in pointers)
                cur.execute(_SQL.sql("versions"), {"org": self.org, "datasets": datasets,
                                                   "versions": [pointers[d] for d in datasets]})
                for v in cur.fetchall():
                    name = v["dataset_id"]
                    pinned.versions[name] = int(v["version"])
                    pinned.tables[name] = v["table_name"]
                    pinned.kinds[name] = v["kind"]
                    if v["snapshot_id"] is not None:
                        pinned.snapshots[name] = int(v["snapshot_id"])
                for name in reads:
                    if name in pinned.snapshots:
                        pinned.cold[name] = self._cold_files(pinned.tables[name], pinned.snapshots[name],
                                                             bounds.get(name, EVERYTHING))
                self._pin_hot(cur, pinned, reads, bounds, live=at is None)
                self._pin_state(cur, pinned, reads)
        return pinned

    def _pin_hot(self, cur: Any, pinned: _Pinned, reads: Sequence[str], bounds: Mapping[str, Range], *,
                 live: bool) -> None:
        """Each chain dataset's boundary (its cold watermark, else the highest block its pinned
        version holds) and, for a live query, its hot rows above it within the query's bounds."""
        for name in reads:
            if name not in CHAIN_VIEWS:
                continue
            mark = pinned.watermarks.get(name)
            if mark is None:
                highs = [f.high for f in self._all_files(pinned, name) if f.high is not None]
                mark = max(highs) if highs else None
            pinned.boundaries[name] = mark
            if not live or name not in HOT_DATASETS:
                continue
            low, high = bounds.get(name, EVERYTHING)
            first = max(low if low is not None else 0, (mark + 1) if mark is not None else 0)
            last = high if high is not None else MAX_BLOCK
            if first > last:
                pinned.hot[name] = contract(name).arrow_schema().empty_table()
                continue
            try:
                pinned.hot[name] = read_hot(cur, self.chain_id, first, last, [name])[name]
            except (ConformError, BadHotRow) as exc:
                raise QueryFailed(f"the hot rows of {name} do not fit its contract: {exc}") from exc

    def _pin_state(self, cur: Any, pinned: _Pinned, reads: Sequence[str]) -> None:
        for name in reads:
            if name in STATE_VIEWS:
                cur.execute(_SQL.sql(name), {"org": self.org})
                rows = cur.fetchall()
                pinned.state[name] = pa.Table.from_pylist(rows, schema=_STATE_SCHEMAS[name])

    def _all_files(self, pinned: _Pinned, name: str) -> list[ColdFile]:
        if name not in pinned.snapshots:
            return []
        return self._cold_files(pinned.tables[name], pinned.snapshots[name], EVERYTHING)

    # -- cold files -------------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        if self._open_catalog is None:
            raise ConfigError("the query service has no warehouse: only hot data can be queried "
                              "(set TRACE_OBJECT_STORE)")
        with self._lock:
            if self._catalog is None:
                self._catalog = self._open_catalog()
            return self._catalog

    def _cold_files(self, table_name: str, snapshot: int, bound: Range) -> list[ColdFile]:
        """The snapshot's data files that may hold blocks of ``bound`` (listed once per snapshot)."""
        key = (table_name, snapshot)
        with self._lock:
            files = self._files.get(key)
        if files is None:
            namespace, _, name = table_name.rpartition(".")
            table = self.catalog().load_table((namespace, name))
            field_id = (table.schema().find_field("block_number").field_id
                        if "block_number" in table.schema().column_names else None)
            files = []
            for task in table.scan(snapshot_id=snapshot, row_filter=AlwaysTrue()).plan_files():
                low = high = None
                if field_id is not None:
                    low = _bound(task.file.lower_bounds, field_id)
                    high = _bound(task.file.upper_bounds, field_id)
                files.append(ColdFile(task.file.file_path, low, high, task.file.record_count))
            with self._lock:
                self._files[key] = files
        low, high = bound
        return [f for f in files if not ((high is not None and f.low is not None and f.low > high)
                                         or (low is not None and f.high is not None and f.high < low))]

    def _dataset(self, name: str, pinned: _Pinned) -> pads.Dataset | pa.Table:
        schema = self._schema(name, pinned)
        files = pinned.cold.get(name, [])
        if not files:
            return schema.empty_table()
        filesystem, paths = self._paths([f.path for f in files])
        return pads.dataset(paths, schema=schema, format="parquet", filesystem=filesystem)

    def _schema(self, name: str, pinned: _Pinned) -> pa.Schema:
        if name in load_contracts():
            return contract(name).arrow_schema()
        namespace, _, table = pinned.tables[name].rpartition(".")
        schema = self.catalog().load_table((namespace, table)).schema()
        return schema_to_pyarrow(schema, include_field_ids=False)

    def _paths(self, uris: Sequence[str]) -> tuple[Any, list[str]]:
        local = [u for u in uris if u.startswith("file:") or "://" not in u]
        if len(local) == len(uris):  # a directory's files: file:// URLs or plain paths
            return None, [unquote(urlsplit(u).path) if u.startswith("file:") else str(Path(u)) for u in uris]
        with self._lock:
            if self._fs is None:
                if self._filesystem is None:
                    raise ConfigError("the query service cannot open the object store of the datasets")
                self._fs = self._filesystem()
        return self._fs, [u.split("://", 1)[1] for u in uris]

    # -- running ------------------------------------------------------------------------------------

    def _execute(self, sql: str, reads: Sequence[str], pinned: _Pinned, limits: Limits,
                 params: Mapping[str, Any] | None = None) -> tuple[pa.Table, bool]:
        con = duckdb.connect(config={
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
            "memory_limit": limits.memory, "threads": limits.threads})
        try:
            for index, name in enumerate(reads):
                self._view(con, index, name, pinned)
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            timer = threading.Timer(limits.timeout_s, con.interrupt)
            timer.start()
            try:
                relation = con.sql(sql, params=dict(params)) if params else con.sql(sql)
                if relation is None:
                    raise QueryFailed("the statement returned no rows")
                reader = relation.to_arrow_reader(min(limits.rows + 1, 100_000))
                batches: list[pa.RecordBatch] = []
                count = 0
                for batch in reader:
                    batches.append(batch)
                    count += batch.num_rows
                    if count > limits.rows:
                        break
                table = pa.Table.from_batches(batches, schema=reader.schema)
            except duckdb.InterruptException as exc:
                raise QueryTimeout(f"the query ran past its time limit ({limits.timeout_s:g} s) and was "
                                   "interrupted") from exc
            except duckdb.Error as exc:
                if not timer.is_alive() and "interrupt" in str(exc).lower():
                    raise QueryTimeout(f"the query ran past its time limit ({limits.timeout_s:g} s) and "
                                       "was interrupted") from exc
                raise QueryFailed(_one_line(exc)) from exc
            finally:
                timer.cancel()
        finally:
            con.close()
        return table.slice(0, limits.rows), table.num_rows > limits.rows

    def _view(self, con: duckdb.DuckDBPyConnection, index: int, name: str, pinned: _Pinned) -> None:
        """The view ``name``: its sources registered under names of our own (``__cold_<i>``...),
        the view's name quoted (a derived dataset id may hold any printable character)."""
        quoted = '"' + name.replace('"', '""') + '"'
        if name in STATE_VIEWS:
            con.register(f"__state_{index}", pinned.state[name])
            con.execute(f"CREATE VIEW {quoted} AS SELECT * FROM __state_{index}")  # noqa: S608
            return
        if name not in pinned.snapshots and name not in CHAIN_VIEWS:
            raise QueryRefused(f"dataset {name!r} has no current version yet")
        con.register(f"__cold_{index}", self._dataset(name, pinned))
        source = f"SELECT * FROM __cold_{index}"  # noqa: S608
        boundary = pinned.boundaries.get(name)
        if name in pinned.hot:
            if boundary is not None:
                source += f" WHERE block_number <= {int(boundary)}"
            con.register(f"__hot_{index}", pinned.hot[name])
            source += f" UNION ALL BY NAME SELECT * FROM __hot_{index}"  # noqa: S608
        con.execute(f"CREATE VIEW {quoted} AS {source}")


def _bound(bounds: Mapping[int, bytes] | None, field_id: int) -> int | None:
    from pyiceberg.conversions import from_bytes
    from pyiceberg.types import LongType

    raw = (bounds or {}).get(field_id)
    return None if raw is None else int(from_bytes(LongType(), raw))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500]


_STATE_SCHEMAS: Mapping[str, pa.Schema] = {
    "prices": pa.schema([("token", pa.string()), ("ts", pa.int64()), ("usd", pa.float64()),
                         ("symbol", pa.string()), ("source", pa.string())]),
    "labels": pa.schema([("address", pa.string()), ("label", pa.string()), ("source", pa.string())]),
    "alerts": pa.schema([("alert_id", pa.string()), ("rule_id", pa.string()),
                         ("rule_version", pa.int32()), ("tier", pa.string()), ("severity", pa.string()),
                         ("chain_id", pa.int64()), ("block_number", pa.int64()), ("block_hash", pa.string()),
                         ("event_type", pa.string()),
                         ("summary", pa.string()), ("fired_at", pa.timestamp("us", tz="UTC")),
                         ("retracted_at", pa.timestamp("us", tz="UTC"))]),
}


def engine_of(database_url: str, org_id: str, chain_id: int, warehouse: str | None, s3: S3Config | None,
              object_store: str | None, *, limits: Limits | None = None) -> QueryEngine:
    """An engine over ``warehouse``'s tables (None: hot data and state views only) whose data
    files it opens through ``object_store``'s filesystem (S3) or directly (a directory)."""
    from tracekit.iceberg import open_catalog
    from tracekit.objects_open import open_object_store

    catalog = None if warehouse is None else (lambda: open_catalog(database_url, warehouse, s3))
    remote = object_store is not None and "://" in object_store and not object_store.startswith("file:")

    def filesystem() -> Any:
        assert object_store is not None  # noqa: S101 - only passed when remote
        return open_object_store(object_store, s3).pyarrow_filesystem()

    return QueryEngine(database_url, org_id, chain_id, catalog, filesystem if remote else None, limits=limits)
