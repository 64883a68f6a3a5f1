"""``trace dag validate``: every problem of every file, then one error; no Postgres needed."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dispatcher.dag.cli import app
from dispatcher.dag.errors import DagValidationError

GOOD = """\
dag: good
jobs:
  - name: a
    operator: op
    activation: reactive
    triggers: [{manual: {}}]
    outputs: [{dataset: shared, write: {mode: replace}}]
"""
BAD = """\
dag: bad
jobs:
  - name: a
    operator: op
    activation: reactive
    scaling: {max_concurrency: 0}
    triggers: [{upstream: nope}]
"""


def test_valid_files_print_ok(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "good.yaml"), "dispatcher/dags"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"ok: dag good, 1 job ({tmp_path / 'good.yaml'})",
        "ok: dag backfill, 2 jobs (dispatcher/dags/backfill.yaml)",
        "ok: dag compact, 1 job (dispatcher/dags/compact.yaml)",
        "ok: dag finalize, 1 job (dispatcher/dags/finalize.yaml)",  # shares the chain datasets with backfill
    ]


def test_every_problem_is_printed_then_the_command_fails(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "rival.yaml").write_text(GOOD.replace("dag: good", "dag: rival"))
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, DagValidationError)
    assert result.stderr.splitlines() == [
        f"{tmp_path}/bad.yaml:6: jobs[0].scaling.max_concurrency: must be at least 1",
        f"{tmp_path}/bad.yaml:7: jobs[0].triggers[0].upstream: no job 'nope' in this DAG",
        f"{tmp_path}/rival.yaml:7: jobs[0].outputs[0].dataset: dataset 'shared' is also produced by dag "
        f"'good' ({tmp_path}/good.yaml); a dataset has one producing DAG",
    ]
    assert result.stdout.splitlines() == [f"ok: dag good, 1 job ({tmp_path}/good.yaml)",
                                          f"ok: dag rival, 1 job ({tmp_path}/rival.yaml)"]
    assert str(result.exception).startswith(f"3 problems; the first: {tmp_path}/bad.yaml:6: ")


def test_missing_files_and_empty_folders(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{tmp_path}/nope.yaml: cannot read: No such file")
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"no DAG files (*.yaml, *.yml) in {tmp_path}"
