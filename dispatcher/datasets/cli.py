"""``trace datasets list | versions | show | lineage | history | cutover | rollback | gc``: versioned
datasets.

Reads and changes Postgres directly (like ``trace dag``). A refused cutover or rollback prints one
line naming the dataset and version at fault and changes nothing. Env: TRACE_DATABASE_URL; gc also
TRACE_OBJECT_STORE (and TRACE_S3_*), TRACE_DATASET_VERSIONS_KEPT, TRACE_STAGING_RETENTION_HOURS.
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from dispatcher.datasets.gc import GcConfig, GcReport, collect_garbage
from dispatcher.datasets.lineage import MAX_DEPTH, lineage
from dispatcher.datasets.store import Applied, DatasetStore
from tracekit.config import load_settings
from tracekit.errors import ConfigError, TraceError

app = typer.Typer(help="Versioned datasets: versions, cutover, rollback, gc.", no_args_is_help=True)

OrgOption = Annotated[str, typer.Option("--org", help="The org the datasets belong to")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept with the pointer set)")]


def _store(org: str) -> DatasetStore:
    return DatasetStore(load_settings().resolved_database_url, org)


def _when(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _blocks(start: int | None, end: int | None) -> str:
    return "" if start is None or end is None else f"{start}..{end}"


@app.command("list")
def list_(org: OrgOption = "default") -> None:
    """The org's datasets with their current version and cold watermark."""
    store = _store(org)
    pinned = store.pin()
    table = Table("dataset", "kind", "table", "current", "versions", "cold watermark",
                  title=f"datasets of {org} (pointer set {pinned.seq})")
    for row in store.datasets():
        name = row["dataset_id"]
        current = pinned.pointers.get(name)
        mark = pinned.watermarks.get(name)
        table.add_row(name, row["kind"], row["table_name"], "" if current is None else str(current),
                      str(row["versions"]), "" if mark is None else str(mark))
    Console().print(table)


@app.command("versions")
def versions(dataset: Annotated[str, typer.Argument(help="The dataset")], org: OrgOption = "default",
             limit: Annotated[int, typer.Option(min=1, help="Newest first, at most")] = 20) -> None:
    """A dataset's versions, newest first; * marks the current one; failed ones say why."""
    store = _store(org)
    current = store.pin().pointers.get(dataset)
    rows = store.versions(dataset, limit=limit)
    if not rows:
        raise ConfigError(f"dataset {dataset!r} of org {org!r} has no versions")
    table = Table("version", "state", "blocks", "rows", "files", "producer", "finished (UTC)", "failure",
                  title=f"{dataset} ({org})")
    for row in rows:
        producer = row["producer"]
        made_by = " ".join(f"{k}={producer[k]}" for k in ("dag", "dag_version", "run_id") if k in producer)
        if producer.get("jobs"):
            made_by += f" job={','.join(producer['jobs'])}"
        table.add_row(f"{row['version']}{' *' if row['version'] == current else ''}", row["state"],
                      _blocks(row["block_start"], row["block_end"]), str(row["row_count"]),
                      str(row["file_count"]), made_by, _when(row["finished_at"]), row["failure"] or "")
    Console().print(table)


VersionOption = Annotated[int | None, typer.Option("--version", min=1,
                                                   help="The version (default: the current one)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]


@app.command("show")
def show(dataset: Annotated[str, typer.Argument(help="The dataset")], version: VersionOption = None,
         org: OrgOption = "default", as_json: JsonOption = False) -> None:
    """One version: state, rows, block range, producer (run, DAG version, jobs, duration, code),
    input versions, the operator's metadata and its files."""
    row = _store(org).version(dataset, version)
    if as_json:
        typer.echo(orjson.dumps(row, default=str, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    producer = row["producer"]
    lines = [
        ("version", f"{row['version']}{' (current)' if row['current'] else ''}"), ("state", row["state"]),
        ("rows / bytes / files", f"{row['row_count']} / {row['byte_count']} / {row['file_count']}"),
        ("blocks", _blocks(row["block_start"], row["block_end"]) or "-"),
        ("cold watermark", "-" if row["cold_watermark"] is None else str(row["cold_watermark"])),
        ("snapshot", "-" if row["snapshot_id"] is None else str(row["snapshot_id"])),
        ("based on", "-" if row["based_on"] is None else str(row["based_on"])),
        ("producer", " ".join(f"{k}={producer[k]}" for k in ("kind", "dag", "dag_version", "run_id")
                              if k in producer) or "-"),
        ("jobs", ", ".join(producer.get("jobs") or []) or "-"),
        ("run took", "-" if producer.get("run_seconds") is None else f"{producer['run_seconds']} s"),
        ("code", producer.get("code_version") or "-"),
        ("inputs", ", ".join(f"{d}={v}" for d, v in sorted(row["inputs"].items()))
         or ("none (read from the chain)" if producer.get("kind") in ("backfill", "finalize") else "none")),
        ("metadata", " ".join(f"{k}={v}" for k, v in sorted(row["metadata"].items())) or "-"),
        ("finished (UTC)", _when(row["finished_at"]) or "-"),
    ]
    if row["failure"]:
        lines.append(("failure", row["failure"]))
    for key, value in lines:
        console.print(f"{key:>20}: {value}", highlight=False)
    files = Table("file", "blocks", "rows", "bytes", "task.attempt",
                  title=f"{dataset} v{row['version']} files")
    for f in (row["manifest"] or {}).get("files", []):
        files.add_row(f["uri"], _blocks(f.get("block_start"), f.get("block_end")), str(f["rows"]),
                      str(f["bytes"]), f"{f['task_id'][:8]}.{f['attempt']}")
    if files.rows:
        console.print(files)


@app.command("lineage")
def lineage_(dataset: Annotated[str, typer.Argument(help="The dataset")], version: VersionOption = None,
             depth: Annotated[int, typer.Option("--depth", min=0, max=MAX_DEPTH,
                                                help="Levels of inputs shown")] = 3,
             org: OrgOption = "default", as_json: JsonOption = False) -> None:
    """What made a version (default: the current one), from which input versions (and what made
    those), and which versions were built from it."""
    found = lineage(_store(org), dataset, version, depth=depth)
    if as_json:
        typer.echo(orjson.dumps(found, default=str, option=orjson.OPT_INDENT_2).decode())
        return

    def label(node: dict[str, Any]) -> str:
        if node.get("missing"):
            return f"{node['dataset_id']} v{node['version']} (no longer exists)"
        producer = node.get("producer") or {}
        made = " ".join(f"{k}={producer[k]}" for k in ("kind", "dag", "dag_version") if k in producer)
        jobs = ",".join(producer.get("jobs") or [])
        more = " ..." if node.get("truncated") else ""
        rows = "" if node.get("row_count") is None else f" {node['row_count']} rows"
        current = " (current)" if node.get("current") else ""
        return (f"{node['dataset_id']} v{node['version']}{current} [{node.get('state', '?')}]{rows}"
                f"{' ' + made if made else ''}{' job ' + jobs if jobs else ''}{more}")

    def grow(tree: Tree, node: dict[str, Any]) -> None:
        for child in node.get("inputs", []):
            grow(tree.add(label(child)), child)

    root = Tree(label(found))
    grow(root, found)
    console = Console()
    console.print(root, highlight=False)
    consumers = found["consumers"]
    console.print("built from it: " + (", ".join(f"{c['dataset_id']} v{c['version']} [{c['state']}]"
                                                  for c in consumers) or "nothing yet"), highlight=False)


@app.command("search")
def search_(word: Annotated[str, typer.Argument(help="A word of a name, description or column")],
            org: OrgOption = "default", as_json: JsonOption = False) -> None:
    """What you can query: the views whose name, description or columns hold WORD, with their
    current version, rows, block range and freshness (blocks behind the chain head)."""
    from dispatcher.query.cli import engine_from
    from dispatcher.query.describe import describe, search

    engine = engine_from(load_settings(), org)
    try:
        found = search(describe(engine), word)
    finally:
        engine.close()
    if as_json:
        typer.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        typer.echo(f"nothing matches {word!r}")
        return
    table = Table("view", "kind", "version", "rows", "blocks", "behind head", "description",
                  title=f"views of {org} matching {word!r}")
    for e in found:
        blocks = "" if e["block_range"] is None else f"{e['block_range'][0]}..{e['block_range'][1]}"
        version, behind = e["current_version"], e["blocks_behind_head"]
        table.add_row(e["name"], e["kind"], "" if version is None else str(version), str(e["rows"]), blocks,
                      "" if behind is None else str(behind), e["description"][:80])
    Console().print(table)


@app.command("history")
def history(org: OrgOption = "default",
            limit: Annotated[int, typer.Option(min=1, help="Newest first, at most")] = 20) -> None:
    """Pointer sets, newest first: what each cutover or rollback changed, by whom and why."""
    table = Table("set", "action", "changed", "pointers", "restores", "actor", "reason", "at (UTC)",
                  title=f"pointer sets of {org}")
    for row in _store(org).history(limit=limit):
        pointers = " ".join(f"{d}={v}" for d, v in sorted(row["pointers"].items()))
        table.add_row(str(row["seq"]), row["action"], ", ".join(row["changed"]), pointers,
                      "" if row["restores"] is None else str(row["restores"]), row["actor"], row["reason"],
                      _when(row["created_at"]))
    Console().print(table)


def _parse(pairs: list[str]) -> dict[str, int]:
    versions: dict[str, int] = {}
    for pair in pairs:
        name, _, number = pair.partition("=")
        if not name or not number.strip().isdigit():
            raise ConfigError(f"{pair!r} is not DATASET=VERSION (e.g. blocks=3)")
        if name in versions:
            raise ConfigError(f"dataset {name!r} is named twice")
        versions[name] = int(number)
    return versions


def _say(applied: Applied, verb: str) -> None:
    moved = ", ".join(f"{d}={applied.pointers.get(d, '-')}" for d in applied.changed)
    moved = moved or "nothing (already so)"
    typer.echo(f"{verb}: pointer set {applied.seq}: {moved}")
    for dag, version in sorted(applied.dags_restored.items()):
        typer.echo(f"  dag {dag}: {'version ' + str(version) if version is not None else 'retired'} active")
    if applied.canceled_runs:
        typer.echo(f"  {applied.canceled_runs} run(s) of the rolled-back DAG versions canceled")


@app.command("cutover")
def cutover(pairs: Annotated[list[str], typer.Argument(help="DATASET=VERSION ... (all move at once)")],
            org: OrgOption = "default", reason: ReasonOption = "") -> None:
    """Make ready versions current, all in one transaction."""
    _say(_store(org).cutover(_parse(pairs), actor=getpass.getuser(), reason=reason), "cut over")


@app.command("rollback")
def rollback(to: Annotated[int | None, typer.Option("--to", help="Pointer set to restore (default: the"
                                                                 " one before the newest)")] = None,
             org: OrgOption = "default", reason: ReasonOption = "") -> None:
    """Restore an earlier pointer set and the DAG versions active then; cancel the runs of the
    DAG versions rolled back."""
    _say(_store(org).rollback(to_seq=to, actor=getpass.getuser(), reason=reason), "rolled back")


@app.command("gc")
def gc(dry: Annotated[bool, typer.Option("--dry", help="Say what would be deleted; change nothing")] = False,
       org: OrgOption = "default") -> None:
    """Expire the versions retention does not keep (it keeps those the newest
    TRACE_DATASET_VERSIONS_KEPT pointer sets name) and delete the files only they used; delete
    orphaned staging files of runs ended more than TRACE_STAGING_RETENTION_HOURS ago."""
    from dispatcher.cli import open_store, warehouse_of
    from tracekit.iceberg import open_catalog
    from tracekit.objects import parse_store_url

    settings = load_settings()
    store = open_store(settings)
    try:
        s3 = (settings.s3_config(create_secrets=False)
              if parse_store_url(settings.resolved_object_store).bucket is not None else None)
    except ValueError as exc:  # an unreadable secrets file
        raise TraceError(str(exc)) from exc
    config = GcConfig(settings.resolved_database_url, org, settings.dataset_versions_kept,
                      dt.timedelta(hours=settings.staging_retention_hours))
    catalog = open_catalog(settings.resolved_database_url, warehouse_of(settings.resolved_object_store), s3)
    try:
        report = collect_garbage(config, catalog, store, dry=dry)
    finally:
        catalog.close()
    show_report(report, org=org, kept=config.versions_kept, console=Console())


def show_report(report: GcReport, *, org: str, kept: int, console: Console) -> None:
    """The versions retention keeps and expires, the files deleted (or, dry, that would be), and
    a line of totals."""
    expire, delete = ("would expire", "would delete") if report.dry else ("expired", "deleted")
    versions = Table("dataset", "version", "decision", "why",
                     title=f"retention of {org}: versions the newest {kept} pointer set(s) name are kept")
    for plan in report.retention:
        for version in sorted([*plan.kept, *plan.expire]):
            why = plan.kept.get(version)
            versions.add_row(plan.dataset_id, str(version), "keep" if why else expire,
                             why.value if why else "no pointer set kept names it")
    if versions.rows:
        console.print(versions)
    if report.deleted:
        files = Table("kind", "key", "bytes", "why", title=f"files {delete}")
        for item in report.deleted:
            files.add_row(item.kind, item.key, "" if item.size is None else str(item.size), item.why)
        console.print(files)
    left = ", ".join(f"{n} {reason.value}" for reason, n in sorted(report.staging.left.items()))
    sizes = sum(d.size or 0 for d in report.deleted)
    console.print(f"{expire} {len(report.expired)} version(s); {delete} {len(report.deleted)} file(s) "
                  f"({sizes} bytes{' known' if any(d.size is None for d in report.deleted) else ''}); "
                  f"staging files left: {left or 'none'}", highlight=False)
    if report.outside:
        shown = ", ".join(report.outside[:5]) + (" ..." if len(report.outside) > 5 else "")
        console.print(f"{len(report.outside)} file(s) only expired snapshots used are outside the object "
                      f"store; left: {shown}", highlight=False)


@app.command("compact")
def compact(
    dataset: Annotated[str, typer.Argument(help="A chain dataset (blocks, transactions, logs, ...)")],
    partition: Annotated[int | None, typer.Option(
        "--partition", min=0, help="The first block of the partition to compact (a multiple of its width, "
                                   "10000); default: every partition with --min-files files or more")] = None,
    min_files: Annotated[int, typer.Option("--min-files", min=1,
                                           help="Compact a partition holding this many files or more")] = 2,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for each run's commit, then compact "
                                                                "the next partition")] = True,
    org: OrgOption = "default",
) -> None:
    """Rewrite the small files of a partition as one file: a new version with the same rows. One run
    per partition, one after the other (each reads the current version; its commit makes the next).
    The dispatcher (with its warehouse) and a worker do the work; env as for gc."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    from dispatcher.catalog import PgJobCatalog
    from dispatcher.cli import warehouse_of
    from dispatcher.datasets.compact import Started, compact_next, wait_commit
    from dispatcher.store import TaskStore
    from operators.cryo_ingest import chain_name
    from tracekit.iceberg import open_catalog
    from tracekit.objects import parse_store_url

    settings = load_settings()
    url = settings.resolved_database_url
    try:
        s3 = (settings.s3_config(create_secrets=False)
              if parse_store_url(settings.resolved_object_store).bucket is not None else None)
    except ValueError as exc:  # an unreadable secrets file
        raise TraceError(str(exc)) from exc
    warehouse = warehouse_of(settings.resolved_object_store)
    store = _store(org)

    async def start(after: int | None) -> Started:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
            tasks = TaskStore(pool, PgJobCatalog(pool))
            return await compact_next(tasks, store, lambda: open_catalog(url, warehouse, s3), dataset,
                                      partition=partition, min_files=min_files, after=after,
                                      chain_id=settings.chain_id, chain=chain_name(settings.chain_id),
                                      submitted_by=getpass.getuser())

    try:
        done: list[str] = []
        after = None
        while True:
            started = asyncio.run(start(after))
            plan, part = started.plan, started.partition
            if started.run_id is None or part is None:
                typer.echo(f"compacted {len(done)} partition(s) of {dataset}: version {plan.version} is "
                           "current" if done else plan.nothing())
                return
            typer.echo(f"{dataset} {part} (blocks {part.first_block}..{part.last_block}) of version "
                       f"{plan.version}: {len(part.files)} files, {part.rows} rows -> run {started.run_id} "
                       f"{'started' if started.created else '(started before)'}")
            if not wait:
                if started.remaining:
                    typer.echo(f"{len(started.remaining)} more partition(s) to compact once it is committed")
                return
            outcome = wait_commit(url, org, started.run_id)
            if not outcome.committed:
                ended = f"commit {outcome.commit_state}" if outcome.state == "succeeded" else outcome.state
                why = outcome.error or "no file"
                raise TraceError(f"run {started.run_id} ({dataset} {part}): {ended}: {why}")
            typer.echo(f"  committed: {dataset} version {outcome.versions.get(dataset)}")
            done.append(str(part))
            if partition is not None:
                return
            after = part.start
    finally:
        store.close()  # its kept connection
