"""``trace datasets list | versions | history | cutover | rollback``: versioned datasets.

Reads and changes Postgres directly (like ``trace dag``). A refused cutover or rollback prints one
line naming the dataset and version at fault and changes nothing. Env: TRACE_DATABASE_URL.
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.datasets.store import Applied, DatasetStore
from tracekit.config import load_settings
from tracekit.errors import ConfigError

app = typer.Typer(help="Versioned datasets: versions, cutover, rollback.", no_args_is_help=True)

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
        made_by = " ".join(f"{k}={producer[k]}" for k in ("dag", "dag_version", "job", "run_id")
                           if k in producer)
        table.add_row(f"{row['version']}{' *' if row['version'] == current else ''}", row["state"],
                      _blocks(row["block_start"], row["block_end"]), str(row["row_count"]),
                      str(row["file_count"]), made_by, _when(row["finished_at"]), row["failure"] or "")
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
