"""Datasets as Apache Iceberg tables (format v2): pyiceberg's SQL catalog in Trace's own Postgres.

:func:`open_catalog` opens the catalog: its two tables (``iceberg_tables``,
``iceberg_namespace_properties``) live in the Postgres schema ``iceberg`` (the connection's
``search_path``, so any engine's JDBC/SQL catalog finds them there too), table files under the
warehouse (``s3://datasets/warehouse`` or a ``file://`` directory).

:class:`DatasetTable` is one dataset's table as Trace versions it. A version is an Iceberg snapshot
built on a branch (:meth:`~DatasetTable.stage`: already written Parquet files added, a block range
replaced, all in one new snapshot whose parent is main's current snapshot; main does not move) and
made current by moving ``main`` to it (:meth:`~DatasetTable.set_main`: cutover, or rollback to an
older snapshot). Postgres (Trace's own tables) says which version is current; ``main`` follows it.
:meth:`~DatasetTable.expire` drops snapshots no longer needed and says which files only they used.

Concurrency: a commit is optimistic (the catalog row's metadata location is compared and swapped);
of two writers one gets pyiceberg's ``CommitFailedException``. Callers serialise the commits of one
table; each change here is still retried a few times on that exception, reloading the table and
applying the whole change again (pyiceberg's own retry is switched off per table, as it would
rebuild a staged snapshot on a moved branch head), then raised as :class:`CommitConflict`.

Errors are mapped here once: catalog and Postgres problems to :class:`CatalogError` /
:class:`CatalogUnavailable`, object I/O to the :class:`ObjectStoreError` family, an incompatible
schema to :class:`SchemaChangeError`.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy.exc
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.expressions.parser import parse as parse_filter
from pyiceberg.io import load_file_io
from pyiceberg.io.pyarrow import (
    ArrowScan,
    _check_pyarrow_schema_compatible,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_file_to_data_file,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestFile
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.sorting import NullOrder, SortDirection
from pyiceberg.table.update import RemoveSnapshotsUpdate
from pyiceberg.table.update.snapshot import ManageSnapshots, _OverwriteFiles
from pyiceberg.transforms import IdentityTransform, TruncateTransform
from pyiceberg.types import LongType
from pyiceberg.utils.concurrent import ExecutorFactory

from tracekit.datasets import (
    PARTITION_COLUMN,
    DatasetContract,
    SchemaChange,
    check_compatible,
    columns_of,
    iceberg_type,
)
from tracekit.errors import (
    CatalogError,
    CatalogUnavailable,
    CommitConflict,
    ConfigError,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreUnavailable,
    SchemaChangeError,
    TraceError,
)
from tracekit.objects import S3Config, parse_store_url

T = TypeVar("T")

CATALOG_SCHEMA = "iceberg"  # the Postgres schema of the catalog's tables
CATALOG_NAME = "trace"
MAIN = "main"
EMPTY_PROPERTY = "trace.empty-table"  # summary property of a new table's first, empty snapshot
COMMIT_ATTEMPTS = 3
TABLE_PROPERTIES: Mapping[str, str] = {
    TableProperties.COMMIT_NUM_RETRIES: "0",  # retried here, the whole change reapplied
    TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
    TableProperties.METADATA_PREVIOUS_VERSIONS_MAX: "100",
}
_OUTAGE_WORDS = ("NETWORK_CONNECTION", "curlCode", "Connection refused", "timed out", "SERVICE_UNAVAILABLE",
                 "SLOW_DOWN", "INTERNAL_FAILURE")


# ------------------------------------------------------------------------------- errors


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split()) if text else type(exc).__name__


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Map pyiceberg, SQLAlchemy/psycopg and pyarrow errors to one :class:`TraceError` line."""
    try:
        yield
    except TraceError:
        raise
    except CommitFailedException as exc:
        raise CommitConflict(f"{what}: another writer committed first ({_line(exc)})") from exc
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        raise CatalogError(f"{what}: {_line(exc)}") from exc
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, psycopg.OperationalError) as exc:
        reason = _line(getattr(exc, "orig", None) or exc)
        raise CatalogUnavailable(f"{what}: cannot reach the catalog's Postgres ({reason})") from exc
    except (sqlalchemy.exc.SQLAlchemyError, psycopg.Error) as exc:
        raise CatalogError(f"{what}: the catalog's Postgres refused: {_line(exc)}") from exc
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"{what}: no object {exc.filename or _line(exc)}") from exc
    except OSError as exc:
        text = _line(exc)
        error = ObjectStoreUnavailable if any(word in text for word in _OUTAGE_WORDS) else ObjectStoreError
        raise error(f"{what}: object store: {text}") from exc
    except (ValueError, ValidationException) as exc:
        raise CatalogError(f"{what}: {_line(exc)}") from exc


# ------------------------------------------------------------------------------ catalog


def catalog_uri(database_url: str) -> str:
    """The SQLAlchemy URI of ``database_url`` (``postgresql://...``) for pyiceberg: the psycopg
    driver, and ``search_path`` set to :data:`CATALOG_SCHEMA` through the libpq ``options``."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg") or not parts.netloc:
        raise ConfigError("catalog: the database URL is not a postgresql://USER@HOST:PORT/DB URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = [value for key, value in query if key == "options"]
    rest = [(key, value) for key, value in query if key != "options"]
    rest.append(("options", " ".join([*options, f"-csearch_path={CATALOG_SCHEMA}"])))
    return urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, urlencode(rest, quote_via=quote), ""))


def _libpq_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    if parts.scheme == "postgresql+psycopg":
        return urlunsplit(parts._replace(scheme="postgresql"))
    return database_url


def ensure_catalog_schema(database_url: str) -> None:
    """Create the Postgres schema :data:`CATALOG_SCHEMA` unless it exists."""
    with _mapped("catalog"), psycopg.connect(_libpq_url(database_url), connect_timeout=5,
                                             autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (CATALOG_SCHEMA,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{CATALOG_SCHEMA}"')


def warehouse_uri(warehouse: str) -> str:
    """``s3://BUCKET/PREFIX`` as given, a directory (path or ``file://``) as a ``file://`` URI,
    created; other forms are an ObjectStoreUrlError (a ConfigError), as for the object store."""
    location = parse_store_url(warehouse)
    if location.bucket is not None:
        return f"s3://{location.bucket}/{location.prefix}".rstrip("/")
    directory = (location.directory or Path(warehouse)).expanduser().absolute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ObjectStoreError(f"catalog: cannot create the warehouse {directory}: {exc.strerror}") from exc
    return directory.as_uri()


def s3_properties(s3: S3Config) -> dict[str, str]:
    """pyiceberg's FileIO properties for ``s3`` (path-style addressing with an endpoint)."""
    properties = {"s3.region": s3.region, "s3.connect-timeout": str(s3.connect_timeout),
                  "s3.request-timeout": str(s3.read_timeout)}
    if s3.endpoint is not None:
        properties |= {"s3.endpoint": s3.endpoint, "s3.path-style-access": "true",
                       "s3.force-virtual-addressing": "false"}
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        properties |= {"s3.access-key-id": s3.access_key_id.get_secret_value(),
                       "s3.secret-access-key": s3.secret_access_key.get_secret_value()}
    return properties


def open_catalog(database_url: str, warehouse: str, s3: S3Config | None = None, *,
                 name: str = CATALOG_NAME) -> Catalog:
    """pyiceberg's ``SqlCatalog`` over ``database_url``, its tables in the Postgres schema
    ``iceberg`` (created if missing), table files under ``warehouse`` (``s3://datasets/warehouse``
    with ``s3``, or a directory). Close it with ``catalog.close()``."""
    uri = catalog_uri(database_url)
    properties = {"uri": uri, "warehouse": warehouse_uri(warehouse), "init_catalog_tables": "true"}
    if properties["warehouse"].startswith("s3://"):
        properties |= s3_properties(s3 or S3Config())
    ensure_catalog_schema(database_url)
    with _mapped("catalog"):
        return SqlCatalog(name, **properties)


# ------------------------------------------------------------------------------- tables


class DataFileInfo(NamedTuple):
    """A data file of a snapshot: its URL (as added), rows and bytes."""

    url: str
    record_count: int
    size: int


@dataclass(frozen=True)
class Expired:
    """What :meth:`DatasetTable.expire` removed: snapshot ids, the data files no kept snapshot uses
    (delete them), and the manifests and manifest lists only those snapshots used."""

    snapshots: tuple[int, ...] = ()
    data_files: tuple[str, ...] = ()
    metadata_files: tuple[str, ...] = ()


def ensure_table(catalog: Catalog, namespace: str, contract: DatasetContract) -> DatasetTable:
    """The table ``namespace.<contract.name>``, created from the contract if missing (with the
    namespace). When it exists, a compatible contract change (new optional columns, widened
    types, relaxed columns, a new sort order or unique key) evolves it in one commit; an
    incompatible one (or another partition width) raises :class:`SchemaChangeError` naming the
    column, changing nothing. Calling it again with the same contract commits nothing."""
    identifier = (namespace, contract.name)
    what = f"{namespace}.{contract.name}: ensure table"
    loaded: Table | None = None
    with _mapped(what):
        try:
            loaded = catalog.load_table(identifier)  # its namespace exists then
        except NoSuchTableError:
            catalog.create_namespace_if_not_exists(namespace)
            schema = contract.iceberg_schema()
            txn = catalog.create_table_transaction(
                identifier, schema=schema, partition_spec=contract.partition_spec(),
                sort_order=contract.sort_order(), properties={**TABLE_PROPERTIES, "format-version": "2"})
            txn.set_properties({TableProperties.DEFAULT_NAME_MAPPING:
                                txn.table_metadata.schema().name_mapping.model_dump_json()})
            with txn.update_snapshot(snapshot_properties={EMPTY_PROPERTY: "true"}).fast_append():
                pass  # main starts at an empty snapshot: branches need one to start from
            with contextlib.suppress(TableAlreadyExistsError):  # another process created it first
                txn.commit_transaction()
    table = DatasetTable(catalog, identifier)
    table._commit("ensure table", lambda t: _evolve(t, contract), loaded=loaded)
    return table


def _partition_problem(table: Table, contract: DatasetContract) -> str | None:
    """Why the table's partitioning is not the contract's (``truncate[W](block_number)``, or none
    for an unpartitioned contract), None when it is."""
    schema = table.schema()
    fields = [(schema.find_column_name(f.source_id), f.transform) for f in table.spec().fields]
    wanted: list[tuple[str, Any]] = \
        [(PARTITION_COLUMN, TruncateTransform(contract.partition_width))] if contract.partitioned else []
    if fields != wanted:
        shown = ", ".join(f"{transform}({column})" for column, transform in fields) or "nothing"
        theirs = f"truncate[{contract.partition_width}]({PARTITION_COLUMN})" if contract.partitioned \
            else "nothing (unpartitioned)"
        needs = "a new partition width" if fields and wanted else "another partitioning"
        return f"partitioned by {shown}, the contract by {theirs}; {needs} needs a new table"
    return None


def _evolve(table: Table, contract: DatasetContract) -> None:
    name = ".".join(table.name())
    problem = _partition_problem(table, contract)
    if problem is not None:
        raise SchemaChangeError(f"{name}: incompatible change: {problem}")
    change: SchemaChange = check_compatible(columns_of(table.schema()), contract.columns, dataset=name)
    schema = table.schema()
    keys_differ = set(schema.identifier_field_names()) != set(contract.unique_key)
    sort = [(schema.find_column_name(f.source_id), f.transform, f.direction, f.null_order)
            for f in table.sort_order().fields]
    sort_differs = sort != [(key, IdentityTransform(), SortDirection.ASC, NullOrder.NULLS_FIRST)
                            for key in contract.sort_keys]
    missing_properties = {k: v for k, v in TABLE_PROPERTIES.items() if table.properties.get(k) != v}
    if change.empty and not keys_differ and not sort_differs and not missing_properties:
        return
    txn = table.transaction()
    if missing_properties:
        txn.set_properties(missing_properties)
    if not change.empty or keys_differ:
        with txn.update_schema() as update:
            for column in change.added:
                update.add_column(column.name, iceberg_type(column.type), doc=column.description or None)
            for column in change.widened:
                update.update_column(column.name, field_type=iceberg_type(column.type))
            for column in change.relaxed:
                update.make_column_optional(column.name)
            if keys_differ:
                update.set_identifier_fields(*contract.unique_key)
    if sort_differs:
        with txn.update_sort_order() as order:
            for key in contract.sort_keys:
                order.asc(key, IdentityTransform(), NullOrder.NULLS_FIRST)
    txn.commit_transaction()


class DatasetTable:
    """One dataset's Iceberg table: stage versions on branches, move ``main``, expire."""

    def __init__(self, catalog: Catalog, identifier: tuple[str, str], *, attempts: int = COMMIT_ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.catalog = catalog
        self.identifier = identifier
        self.name = ".".join(identifier)
        self.attempts = attempts
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"DatasetTable({self.name!r})"

    def table(self) -> Table:
        """The pyiceberg table as the catalog has it now (for reading)."""
        with _mapped(f"{self.name}: load"):
            return self.catalog.load_table(self.identifier)

    def _commit(self, what: str, change: Callable[[Table], T], *, loaded: Table | None = None) -> T:
        """``change(fresh table)``, reloading and applying it again when another commit won: a
        ``CommitFailedException``, or any catalog error while the table moved meanwhile (pyiceberg
        meets some races as a ValueError, e.g. a snapshot's sequence number already taken).
        ``loaded``: the table as just loaded, for the first try."""
        where = f"{self.name}: {what}"
        delay = 0.05
        for attempt in itertools.count(1):
            if attempt == 1 and loaded is not None:
                table = loaded
            else:
                with _mapped(where):
                    table = self.catalog.load_table(self.identifier)
            try:
                with _mapped(where):
                    return change(table)
            except CatalogError as exc:
                if attempt >= self.attempts:
                    raise
                if not isinstance(exc, CommitConflict) and not self._moved(table):
                    raise
            self._sleep(delay)
            delay = min(delay * 4, 1.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _moved(self, table: Table) -> bool:
        """Whether a commit landed since ``table`` was loaded."""
        with _mapped(f"{self.name}: load"):
            return bool(self.catalog.load_table(self.identifier).metadata_location != table.metadata_location)

    # -- reading -------------------------------------------------------------------------

    def main_snapshot(self) -> int | None:
        """The snapshot ``main`` points at (the current version), None for a table never staged."""
        snapshot = self.table().current_snapshot()
        return snapshot.snapshot_id if snapshot is not None else None

    def snapshot_ids(self) -> list[int]:
        return [s.snapshot_id for s in self.table().snapshots()]

    def branches(self) -> dict[str, int]:
        """Every branch but ``main`` and the snapshot it points at (versions staged, not cut over)."""
        return {name: ref.snapshot_id for name, ref in self.table().refs().items()
                if name != MAIN and ref.snapshot_ref_type == SnapshotRefType.BRANCH}

    def files(self, snapshot_id: int) -> list[DataFileInfo]:
        """The data files of snapshot ``snapshot_id``, sorted by URL."""
        table = self.table()
        with _mapped(f"{self.name}: files of snapshot {snapshot_id}"):
            live, _ = _references(table, [_snapshot(table, snapshot_id)], {})
            return sorted(DataFileInfo(f.file_path, f.record_count, f.file_size_in_bytes)
                          for f in live.values())

    def read(self, snapshot_id: int | None = None) -> pa.Table:
        """The rows of snapshot ``snapshot_id`` (default: main's)."""
        table = self.table()
        with _mapped(f"{self.name}: read"):
            if snapshot_id is not None:
                _snapshot(table, snapshot_id)
            return table.scan(snapshot_id=snapshot_id).to_arrow()

    # -- versions --------------------------------------------------------------------------

    def stage(self, files: Sequence[str], *, branch: str, replace_block_range: tuple[int, int] | None = None,
              replace_all: bool = False, properties: Mapping[str, str] | None = None) -> int:
        """Add the Parquet data files at ``files`` (URLs of the object store, written by
        :func:`~tracekit.datasets.conform`-ed tables, each within one partition) to a new snapshot
        on ``branch``, whose parent is main's current snapshot (the branch is created, or moved
        there). With ``replace_block_range=(first, last)`` (inclusive) the rows of those blocks
        are removed in the same snapshot, so staging a range again never duplicates rows; every
        file must then lie within the range. ``properties`` go into the snapshot's summary.
        With ``replace_all`` every row of main is removed instead (a derived dataset built again
        from scratch). Returns the new snapshot's id; ``main`` does not move."""
        if branch == MAIN:
            raise CatalogError(f"{self.name}: stage on a branch of its own, not on {MAIN}")
        if len(set(files)) != len(files):
            raise CatalogError(f"{self.name}: a file is listed twice")
        if replace_all and replace_block_range is not None:
            raise CatalogError(f"{self.name}: replace either a block range or everything, not both")
        if not files and replace_block_range is None and not replace_all:
            raise CatalogError(f"{self.name}: nothing to stage (no files, no block range)")
        if replace_block_range is not None and replace_block_range[0] > replace_block_range[1]:
            raise CatalogError(f"{self.name}: empty block range {replace_block_range}")
        return self._commit(f"stage on {branch}", lambda table: _stage(
            table, list(files), branch, replace_block_range, dict(properties or {}), replace_all))

    def set_main(self, snapshot_id: int) -> None:
        """Make ``snapshot_id`` current: cutover to a staged snapshot, or rollback to an older one.
        Branches pointing at it are removed in the same commit (their version is published).
        Calling it again is a no-op."""
        self._commit(f"set main to {snapshot_id}", lambda table: _set_main(table, snapshot_id))

    def drop_branch(self, branch: str) -> None:
        """Forget a staged version that will not be cut over (its files become expirable)."""
        if branch == MAIN:
            raise CatalogError(f"{self.name}: {MAIN} cannot be dropped")

        def change(table: Table) -> None:
            if branch in table.refs():
                txn = table.transaction()
                ManageSnapshots(txn).remove_branch(branch).commit()
                txn.commit_transaction()

        self._commit(f"drop branch {branch}", change)

    def expire(self, keep: Iterable[int]) -> Expired:
        """Remove every snapshot but those in ``keep``, main's current one and the heads of
        branches (staged versions). Returns the data files that only removed snapshots used:
        never a file of a kept snapshot, nor a file written but not (yet) staged."""
        kept = set(keep)
        return self._commit("expire", lambda table: _expire(table, kept))


# ----------------------------------------------------------------------- the commits


def _snapshot(table: Table, snapshot_id: int) -> Any:
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise CatalogError(f"{'.'.join(table.name())}: no snapshot {snapshot_id}")
    return snapshot


def _manifest_files(table: Table, manifest: ManifestFile, cache: dict[str, list[DataFile]]) -> list[DataFile]:
    if manifest.manifest_path not in cache:
        cache[manifest.manifest_path] = [
            entry.data_file for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
            if entry.data_file.content == DataFileContent.DATA]
    return cache[manifest.manifest_path]


def _bounds(data_file: DataFile, field_id: int | None) -> tuple[int | None, int | None]:
    if field_id is None:  # a table without block numbers (a derived dataset)
        return None, None
    lower = (data_file.lower_bounds or {}).get(field_id)
    upper = (data_file.upper_bounds or {}).get(field_id)
    return (int(from_bytes(LongType(), lower)) if lower is not None else None,
            int(from_bytes(LongType(), upper)) if upper is not None else None)


class _Footers:
    """pyiceberg's ``parquet_file_to_data_file`` for the files one stage adds, for less: what
    depends only on the table (statistics plan, column ids) is computed once, each distinct file
    schema checked once, and a file's size is its open stream's (pyiceberg asked the store again:
    one more request per file on S3). The data files are equal to pyiceberg's."""

    def __init__(self, table: Table) -> None:
        self.io = table.io
        self.metadata = table.metadata
        self.schema = table.metadata.schema()
        self.spec = table.metadata.spec()
        self.stats = compute_statistics_plan(self.schema, table.metadata.properties)
        self.ids = parquet_path_to_id_mapping(self.schema)
        self.compatible: set[bytes] = set()  # serialized file schemas checked

    def data_file(self, url: str) -> DataFile:
        input_file = self.io.new_input(url)
        with input_file.open() as stream:
            footer = pq.read_metadata(stream)
            size = stream.size() if isinstance(stream, pa.NativeFile) else len(input_file)
        arrow_schema = footer.schema.to_arrow_schema()
        key = arrow_schema.serialize().to_pybytes()
        if key not in self.compatible:
            _check_pyarrow_schema_compatible(self.schema, arrow_schema,
                                             format_version=self.metadata.format_version)
            self.compatible.add(key)
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=footer, stats_columns=self.stats, parquet_column_mapping=self.ids)
        return DataFile.from_args(
            content=DataFileContent.DATA, file_path=url, file_format=FileFormat.PARQUET,
            partition=statistics.partition(self.spec, self.schema), file_size_in_bytes=size,
            sort_order_id=None, spec_id=self.metadata.default_spec_id, equality_ids=None, key_metadata=None,
            **statistics.to_serialized_dict())


class _Replace(_OverwriteFiles):
    """pyiceberg's overwrite producer, except that a manifest left without a live file (only
    DELETED entries, e.g. the one recording an earlier replacement) is not carried into the new
    snapshot: pyiceberg 0.12 keeps them, so each replacement of a range would make every later
    commit and scan read one more manifest."""

    def _existing_manifests(self) -> list[ManifestFile]:
        return [m for m in super()._existing_manifests()
                if m.has_added_files() or m.has_existing_files() or m.added_snapshot_id == self._snapshot_id]


def _candidates(table: Table, main: Any, block_range: tuple[int, int] | None,
                bounds: list[tuple[int | None, int | None]]) -> dict[str, DataFile]:
    """The files of main's snapshot that may hold blocks of ``block_range`` or of the added files
    (by path): only the manifests and files whose partition and column bounds overlap are read."""
    if main is None:
        return {}
    ends = [end for pair in bounds for end in pair if end is not None]
    unbounded = len(ends) < 2 * len(bounds)  # a file without bounds (no rows): look everywhere
    if block_range is not None:
        ends += list(block_range)
    if unbounded or not ends:
        row_filter: Any = AlwaysTrue()
    else:
        row_filter = parse_filter(f"{PARTITION_COLUMN} >= {min(ends)} and {PARTITION_COLUMN} <= {max(ends)}")
    tasks = table.scan(snapshot_id=main.snapshot_id, row_filter=row_filter).plan_files()
    return {task.file.file_path: task.file for task in tasks}


def _stage(table: Table, files: list[str], branch: str, block_range: tuple[int, int] | None,
           properties: dict[str, str], replace_all: bool = False) -> int:
    name = ".".join(table.name())
    refs = table.refs()
    if branch in refs and refs[branch].snapshot_ref_type != SnapshotRefType.BRANCH:
        raise CatalogError(f"{name}: {branch} is a tag, not a branch")
    txn = table.transaction()
    main = table.current_snapshot()
    manage = ManageSnapshots(txn)
    if main is not None:
        manage.create_branch(main.snapshot_id, branch)  # (re)points the branch at main
    elif branch in refs:
        manage.remove_branch(branch)  # nothing on main yet: the new snapshot has no parent
    manage.commit()

    block_field = table.schema().find_field(PARTITION_COLUMN) \
        if PARTITION_COLUMN in table.schema().column_names else None
    field_id = block_field.field_id if block_field is not None else None
    footers = _Footers(table)
    def read_footer(url: str) -> DataFile:  # stats and partition from the footer; schema, spec: main's
        with _mapped(f"{name}: stage {url}"):
            return footers.data_file(url)

    added: list[DataFile] = []
    for url, data_file in zip(files, ExecutorFactory.get_or_create().map(read_footer, files), strict=True):
        low, high = _bounds(data_file, field_id)
        if block_range is not None and low is not None and high is not None \
                and not block_range[0] <= low <= high <= block_range[1]:
            raise CatalogError(f"{name}: {url} holds blocks {low}..{high}, outside the replaced range "
                               f"{block_range[0]}..{block_range[1]}")
        added.append(data_file)

    if replace_all or field_id is None:  # every current file is looked at
        current = {} if main is None else {
            task.file.file_path: task.file for task in table.scan(snapshot_id=main.snapshot_id).plan_files()}
    else:
        current = _candidates(table, main, block_range, [_bounds(f, field_id) for f in added])
    already = sorted(set(files) & set(current))
    if already:
        raise CatalogError(f"{name}: {already[0]} is already part of the current version; write each "
                           "attempt under a new key")
    removed: list[DataFile] = list(current.values()) if replace_all else []
    partial: list[DataFile] = []
    if block_range is not None:
        first, last = block_range
        for data_file in current.values():
            low, high = _bounds(data_file, field_id)
            if low is not None and high is not None and (high < first or low > last):
                continue  # no row in the range
            if low is not None and high is not None and first <= low and high <= last:
                removed.append(data_file)
            else:
                partial.append(data_file)

    rewritten: list[str] = []
    try:
        operation = Operation.OVERWRITE if removed or partial else Operation.APPEND
        with _Replace(operation=operation, transaction=txn, io=table.io, branch=branch,
                      snapshot_properties=properties) as producer:
            if replace_all:
                for data_file in removed:
                    producer.delete_data_file(data_file)
            elif block_range is not None and (removed or partial):
                column = PARTITION_COLUMN
                producer.delete_by_predicate(parse_filter(
                    f"{column} >= {block_range[0]} and {column} <= {block_range[1]}"))
                for data_file in removed:
                    producer.delete_data_file(data_file)
                for data_file in partial:  # copy-on-write: keep the rows outside the range
                    new_file = _rewrite_without(table, table.metadata, data_file, block_range)
                    if new_file is data_file:
                        continue
                    producer.delete_data_file(data_file)
                    if new_file is not None:
                        rewritten.append(new_file.file_path)
                        producer.append_data_file(new_file)
            for data_file in added:
                producer.append_data_file(data_file)
            snapshot_id: int = producer.snapshot_id
        txn.commit_transaction()
    except BaseException:
        for path in rewritten:  # files of a commit that did not land
            with contextlib.suppress(Exception):
                table.io.delete(path)
        raise
    return snapshot_id


def _rewrite_without(table: Table, metadata: Any, data_file: DataFile,
                     block_range: tuple[int, int]) -> DataFile | None:
    """``data_file`` without the rows of ``block_range``, written beside the table's data (None:
    no row is left; ``data_file`` itself: no row was in the range). The file stays in its
    partition: its rows came from one."""
    rows = ArrowScan(table_metadata=metadata, io=table.io, projected_schema=metadata.schema(),
                     row_filter=AlwaysTrue()).to_table(tasks=[FileScanTask(data_file)])
    blocks = rows.column(PARTITION_COLUMN)
    kept = rows.filter(pc.or_(pc.less(blocks, block_range[0]), pc.greater(blocks, block_range[1])))
    if len(kept) == len(rows):
        return data_file
    if len(kept) == 0:
        return None
    path = table.location_provider().new_data_location(f"rewrite-{uuid.uuid4().hex}.parquet")
    with table.io.new_output(path).create() as sink:
        pq.write_table(kept, sink, compression="zstd")
    return parquet_file_to_data_file(table.io, metadata, path)


def _set_main(table: Table, snapshot_id: int) -> None:
    _snapshot(table, snapshot_id)
    current = table.current_snapshot()
    published = [name for name, ref in table.refs().items()
                 if name != MAIN and ref.snapshot_ref_type == SnapshotRefType.BRANCH
                 and ref.snapshot_id == snapshot_id]
    moves = current is None or current.snapshot_id != snapshot_id
    if not moves and not published:
        return
    txn = table.transaction()
    manage = ManageSnapshots(txn)
    if moves:
        manage.set_current_snapshot(snapshot_id=snapshot_id)
    for name in published:
        manage.remove_branch(name)
    manage.commit()
    txn.commit_transaction()


def _expire(table: Table, keep: set[int]) -> Expired:
    every = {s.snapshot_id: s for s in table.snapshots()}
    protected = {ref.snapshot_id for ref in table.refs().values()}
    retained = (keep | protected) & set(every)
    doomed = sorted(set(every) - retained)
    if not doomed:
        return Expired()
    cache: dict[str, list[DataFile]] = {}
    kept_files, kept_meta = _references(table, [every[i] for i in retained], cache)
    doomed_files, doomed_meta = _references(table, [every[i] for i in doomed], cache)
    txn = table.transaction()
    # one update for all of them: ExpireSnapshots.by_ids copies the whole table metadata twice per
    # id (quadratic in the number of snapshots); heads of refs are excluded above, as it would
    txn._stage((RemoveSnapshotsUpdate(snapshot_ids=doomed),))
    txn.commit_transaction()
    return Expired(tuple(doomed), tuple(sorted(set(doomed_files) - set(kept_files))),
                   tuple(sorted(doomed_meta - kept_meta)))


def _references(table: Table, snapshots: Iterable[Any],
                cache: dict[str, list[DataFile]]) -> tuple[dict[str, DataFile], set[str]]:
    """The live data files of ``snapshots`` (by path) and their manifest lists and manifests."""
    files: dict[str, DataFile] = {}
    metadata: set[str] = set()
    for snapshot in snapshots:
        metadata.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            metadata.add(manifest.manifest_path)
            files.update((f.file_path, f) for f in _manifest_files(table, manifest, cache))
    return files, metadata


def read_schema(catalog: Catalog, url: str) -> pa.Schema:
    """The Arrow schema of the Parquet file at ``url`` (read through the catalog's file IO: S3 or
    a directory, with its credentials)."""
    io = load_file_io(dict(catalog.properties), url)
    with _mapped(f"read the schema of {url}"), io.new_input(url).open() as stream:
        return pq.read_schema(stream)
