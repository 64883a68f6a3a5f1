"""``trace dag``: validate, diff and deploy DAG files; list, show, roll back and retire versions.

A problem in a file prints as ``FILE:LINE: location: reason`` (every one of them), then the
command fails with one ``error:`` line. Env: TRACE_DATABASE_URL (all but ``validate``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from dispatcher.dag.diff import DagDiff
from dispatcher.dag.errors import DagValidationError
from dispatcher.dag.loader import LoadedDag, check_together, load_dag_file
from tracekit.config import load_settings
from tracekit.yamlfile import yaml_files

app = typer.Typer(help="DAGs as code: validate, diff and deploy DAG files; versions and rollback.",
                  no_args_is_help=True)

OrgOption = Annotated[str, typer.Option("--org", help="The org the DAG belongs to")]


@app.command("run")
def run(
    dag: Annotated[str, typer.Argument(help="A deployed DAG")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="name=value, passed to the tasks")]
        = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key: run again with it, get the same run")]
        = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run, then list its tasks")]
        = True,
) -> None:
    """Start a run of a deployed DAG: one task of each job with a manual trigger (the dispatcher
    must be running; TRACE_DISPATCHER_URL)."""
    from dispatcher.cli import run_dag

    run_dag(dag, param or [], key, wait)


def _database_url() -> str:
    return load_settings().resolved_database_url


def _console() -> Console:
    """Rich output; lines never wrap mid-text, tables fit the terminal (160 columns when piped)."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 160
    return console


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def load_files(paths: Sequence[Path]) -> tuple[list[LoadedDag], list[str]]:
    """Every file loaded, and every problem of every file (and across them)."""
    loaded: list[LoadedDag] = []
    problems: list[str] = []
    files = yaml_files(paths)
    if not files:
        problems.append(f"no DAG files (*.yaml, *.yml) in {', '.join(map(str, paths))}")
    for file in files:
        try:
            loaded.append(load_dag_file(file))
        except DagValidationError as exc:
            problems += exc.lines
    return loaded, problems + check_together(loaded)


def _fail(problems: Sequence[str]) -> None:
    for line in problems:
        typer.echo(line, err=True)
    raise DagValidationError(problems)


def _load_one(path: Path) -> LoadedDag:
    loaded, problems = load_files([path])
    if problems:
        _fail(problems)
    if len(loaded) != 1:
        _fail([f"{path}: name one DAG file, not a folder of {len(loaded)}"])
    return loaded[0]


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="DAG files (YAML) or folders of them")],
) -> None:
    """Check DAG files without touching Postgres; prints every problem as FILE:LINE: location: reason.

    Also checked across the files: a DAG defined twice, a dataset two DAGs produce.
    """
    loaded, problems = load_files(paths)
    for dag in loaded:
        typer.echo(f"ok: dag {dag.spec.dag}, {_jobs(len(dag.spec.jobs))} ({dag.source.path})")
    if problems:
        _fail(problems)


def _compact(value: Any) -> Any:
    """JSON data without the keys whose value is null (unset options), for display."""
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_compact(item) for item in value]
    return value


def _shown(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(_compact(value)).decode()
    return text if len(text) <= 200 else text[:197] + "..."


def print_diff(change: DagDiff, console: Console) -> None:
    if change.unchanged:
        return
    table = Table(title=f"dag {change.dag}", title_justify="left")
    table.add_column("job", no_wrap=True)
    table.add_column("change", no_wrap=True)
    table.add_column("field", overflow="fold")
    table.add_column("old", overflow="fold")
    table.add_column("new", overflow="fold")
    table.add_column("kind", no_wrap=True)
    for job in change.added:
        table.add_row(job, "[green]added[/green]", "", "", "", "materialization")
    for job in change.removed:
        table.add_row(job, "[red]removed[/red]", "", "", "", "materialization")
    for field in change.dag_changes:
        table.add_row("(dag)", "changed", field.path, _shown(field.old), _shown(field.new), field.kind)
    for job_change in change.changed:
        for field in job_change.changes:
            table.add_row(job_change.job, "changed", field.path, _shown(field.old), _shown(field.new),
                          field.kind)
    console.print(table)
    if change.rematerialize:
        console.print(f"rematerialize: {', '.join(change.rematerialize)}")
    else:
        console.print("execution-only changes: nothing to rematerialize")


@app.command()
def diff(path: Annotated[Path, typer.Argument(help="A DAG file (YAML)")]) -> None:
    """Show what deploying the file would change, against the DAG's active version.

    Each change is materialization (rematerializes the job and all downstream of it) or execution.
    Env: TRACE_DATABASE_URL.
    """
    from dispatcher.dag.diff import diff as diff_specs
    from dispatcher.dag.store import active_spec, dataset_producers

    loaded = _load_one(path)
    spec, url, console = loaded.spec, _database_url(), _console()
    active = active_spec(url, spec.org, spec.dag)
    change = diff_specs(active.spec if active else None, spec)
    if active is None:
        console.print(f"dag {spec.dag} (org {spec.org}) is not deployed; deploying it adds every job")
    elif change.unchanged:
        console.print(f"no changes: version {active.version} of dag {spec.dag} is this spec "
                      f"({change.new_digest})")
        return
    else:
        console.print(f"dag {spec.dag} (org {spec.org}): active version {active.version} "
                      f"({change.old_digest}) -> {change.new_digest}")
    print_diff(change, console)
    owners = dataset_producers(url, spec.org)
    for dataset in spec.output_datasets:
        if owners.get(dataset, spec.dag) != spec.dag:
            console.print(f"[red]conflict[/red]: dataset {dataset!r} is produced by dag {owners[dataset]!r}; "
                          "deploy will be refused")


@app.command()
def deploy(
    path: Annotated[Path, typer.Argument(help="A DAG file (YAML)")],
    dry: Annotated[bool, typer.Option("--dry", help="Check, show what would change, write nothing")] = False,
    by: Annotated[str | None, typer.Option("--by", help="Who deploys (default: the OS user)")] = None,
) -> None:
    """Validate the file and make it the DAG's active version (a new version unless unchanged).

    Refused, changing nothing, when another DAG produces one of its datasets. Env: TRACE_DATABASE_URL.
    """
    from dispatcher.dag.store import deploy as deploy_spec

    loaded = _load_one(path)
    spec, console = loaded.spec, _console()
    result = deploy_spec(_database_url(), spec, loaded.source, by or getpass.getuser(), dry=dry)
    if not result.created:
        console.print(f"unchanged: dag {spec.dag} version {result.version} ({result.digest})")
        return
    print_diff(result.diff, console)
    was = f" (was {result.previous_version})" if result.previous_version else " (new DAG)"
    if dry:
        console.print(f"would deploy dag {spec.dag} as version {result.version}{was}; "
                      "nothing written (--dry)")
    else:
        console.print(f"deployed dag {spec.dag} version {result.version}{was}: {_jobs(len(spec.jobs))}, "
                      f"{result.digest}")
    if result.claimed:
        console.print(f"now produces: {', '.join(result.claimed)}")
    if result.released:
        console.print(f"no longer produces: {', '.join(result.released)}")
    if result.rematerialize:
        verb = "would rebuild" if dry else "rebuilding"
        console.print(f"{verb} derived jobs {', '.join(result.rematerialize)} as new versions; readers "
                      "keep the current versions until all are built, then all are cut over at once"
                      + ("" if dry else f" (rematerialization {result.rematerialization})"))


@app.command()
def versions(dag: Annotated[str, typer.Argument(help="The DAG's name")], org: OrgOption = "default") -> None:
    """List the DAG's versions, oldest first; * marks the active one. Env: TRACE_DATABASE_URL."""
    from dispatcher.dag.errors import DagNotFound
    from dispatcher.dag.store import list_versions

    found = list_versions(_database_url(), org, dag)
    if not found:
        raise DagNotFound(f"dag {dag!r} of org {org!r} has never been deployed")
    table = Table("version", "active", "digest", "jobs", "deployed at (UTC)", "by", "source")
    for v in found:
        table.add_row(str(v.version), "*" if v.active else "", v.digest[:19], str(len(v.spec.jobs)),
                      _when(v.deployed_at), v.deployed_by, v.source_path)
    _console().print(table)


@app.command("list")
def list_active(org: OrgOption = "default") -> None:
    """The active DAGs of the org. Env: TRACE_DATABASE_URL."""
    from dispatcher.dag.store import list_dags

    table = Table("dag", "version", "jobs", "digest", "deployed at (UTC)", "by")
    for row in list_dags(_database_url(), org):
        table.add_row(row["dag"], str(row["version"]), str(row["jobs"]), row["digest"][:19],
                      _when(row["deployed_at"]), row["deployed_by"])
    _console().print(table)


@app.command()
def show(
    dag: Annotated[str, typer.Argument(help="The DAG's name")],
    version: Annotated[int | None, typer.Option(help="A version (default: the active one)")] = None,
    org: OrgOption = "default",
) -> None:
    """Print the YAML a version was deployed from. Env: TRACE_DATABASE_URL."""
    from dispatcher.dag.errors import DagNotFound
    from dispatcher.dag.store import active_spec, get_version

    url = _database_url()
    found = get_version(url, org, dag, version) if version is not None else active_spec(url, org, dag)
    if found is None:
        raise DagNotFound(f"dag {dag!r} of org {org!r} has no active version")
    typer.echo(f"# dag {dag} version {found.version} from {found.source_path}, {found.digest}")
    typer.echo(found.source_yaml, nl=not found.source_yaml.endswith("\n"))


@app.command()
def rollback(
    dag: Annotated[str, typer.Argument(help="The DAG's name")],
    version: Annotated[int, typer.Argument(help="The version to make active again")],
    org: OrgOption = "default",
) -> None:
    """Make an earlier version the active one again (atomic). Env: TRACE_DATABASE_URL."""
    from dispatcher.dag.store import rollback_to

    result = rollback_to(_database_url(), org, dag, version)
    if not result.changed:
        typer.echo(f"unchanged: version {version} of dag {dag} is active already")
        return
    typer.echo(f"dag {dag}: version {version} is active (was {result.previous_version or 'none'})")
    if result.claimed:
        typer.echo(f"now produces: {', '.join(result.claimed)}")
    if result.released:
        typer.echo(f"no longer produces: {', '.join(result.released)}")


@app.command()
def retire(dag: Annotated[str, typer.Argument(help="The DAG's name")], org: OrgOption = "default") -> None:
    """Deactivate the DAG and release its datasets; its versions stay (rollback re-activates one).

    Env: TRACE_DATABASE_URL.
    """
    from dispatcher.dag.store import retire as retire_dag

    was, released = retire_dag(_database_url(), org, dag)
    if was is None:
        typer.echo(f"unchanged: dag {dag} has no active version")
        return
    typer.echo(f"retired dag {dag} (version {was} was active); released: {', '.join(released) or 'nothing'}")
