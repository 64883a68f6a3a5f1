"""``trace dag`` as a user runs it: validate, deploy, diff, versions, show, rollback, retire."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracecli.main import app

TRACE = str(Path(sys.executable).with_name("trace"))

DAG = """\
dag: cli_pipe
org: {org}
jobs:
  - name: split
    operator: range_splitter
    activation: reactive
    triggers: [{{manual: {{}}}}]
    outputs: [{{dataset: {org}.chunks, write: {{mode: append, unique_key: [start_block]}}}}]
  - name: ingest
    operator: cryo_ingest
    activation: reactive
    triggers: [{{dataset: {org}.chunks}}]
    inputs: [{org}.chunks]
    outputs: [{{dataset: {org}.blocks, write: {{mode: append, unique_key: [block_number]}}}}]
    scaling: {{max_concurrency: {concurrency}}}
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    return subprocess.run([TRACE, "dag", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, check=False)


def test_validate_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dag: d\njobs:\n  - name: a\n    operator: op\n    activation: reactive\n"
                   "    scaling: {max_concurrency: 0}\n    retry: {max_attempts: 0}\n")
    done = run("validate", str(bad))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{bad}:3: jobs[0].triggers: a reactive job needs at least one trigger (it runs only when one fires)",
        f"{bad}:6: jobs[0].scaling.max_concurrency: must be at least 1",
        f"{bad}:7: jobs[0].retry.max_attempts: must be at least 1",
        f"error: 3 problems; the first: {bad}:3: jobs[0].triggers: a reactive job needs at least one trigger "
        "(it runs only when one fires)",
    ]
    good = run("validate", "dispatcher/dags/backfill.yaml")
    assert (good.returncode, good.stdout) == (0, "ok: dag backfill, 2 jobs (dispatcher/dags/backfill.yaml)\n")


def test_deploy_diff_versions_show_rollback(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("TRACE_DATABASE_URL", pg_url)
    monkeypatch.setenv("COLUMNS", "200")
    org = "c" + uuid.uuid4().hex[:10]
    path = tmp_path / "pipe.yaml"
    path.write_text(DAG.format(org=org, concurrency=4))
    runner = CliRunner()

    def trace(*args: str) -> str:
        result = runner.invoke(app, ["dag", *args])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    out = trace("diff", str(path))
    assert "is not deployed; deploying it adds every job" in out
    out = trace("deploy", str(path), "--dry")
    assert "would deploy dag cli_pipe as version 1 (new DAG); nothing written (--dry)" in out
    out = trace("deploy", str(path), "--by", "alice")
    assert "deployed dag cli_pipe version 1 (new DAG): 2 jobs, sha256:" in out
    assert f"now produces: {org}.blocks, {org}.chunks" in out
    assert trace("deploy", str(path)).startswith("unchanged: dag cli_pipe version 1 (sha256:")
    assert "no changes: version 1 of dag cli_pipe is this spec" in trace("diff", str(path))

    path.write_text(DAG.format(org=org, concurrency=9))
    out = trace("diff", str(path))
    assert "dag cli_pipe (org " in out and "active version 1" in out
    assert "scaling.max_concurrency" in out and "execution" in out
    assert "execution-only changes: nothing to rematerialize" in out
    assert "deployed dag cli_pipe version 2 (was 1)" in trace("deploy", str(path))

    out = trace("versions", "cli_pipe", "--org", org)
    rows = [line for line in out.splitlines() if "alice" in line or str(path) in line]
    assert len(rows) == 2 and "alice" in rows[0] and "*" in rows[1]
    assert "max_concurrency: 9" in trace("show", "cli_pipe", "--org", org)
    assert "max_concurrency: 4" in trace("show", "cli_pipe", "--org", org, "--version", "1")
    assert trace("rollback", "cli_pipe", "1", "--org", org) == "dag cli_pipe: version 1 is active (was 2)\n"
    assert "cli_pipe" in trace("list", "--org", org)
    assert trace("retire", "cli_pipe", "--org", org) == (
        f"retired dag cli_pipe (version 1 was active); released: {org}.blocks, {org}.chunks\n")


def test_a_refused_deploy_is_one_error_line(pg_url: str, tmp_path: Path) -> None:
    org = "c" + uuid.uuid4().hex[:10]
    first, rival = tmp_path / "first.yaml", tmp_path / "rival.yaml"
    first.write_text(DAG.format(org=org, concurrency=1))
    rival.write_text(DAG.format(org=org, concurrency=1).replace("dag: cli_pipe", "dag: rival"))
    env = {"TRACE_DATABASE_URL": pg_url}
    assert run("deploy", str(first), env=env).returncode == 0
    done = run("deploy", str(rival), env=env)
    assert done.returncode == 1
    assert done.stderr == (
        f"error: cannot deploy dag 'rival': datasets '{org}.blocks' (dag 'cli_pipe'), '{org}.chunks' "
        "(dag 'cli_pipe') are produced by other DAGs; a dataset has one producing DAG: remove them from this "
        "DAG's outputs, or from those DAGs first\n")
    missing = run("versions", "nothing", "--org", org, env=env)
    assert (missing.returncode, missing.stderr) == (
        1, f"error: dag 'nothing' of org '{org}' has never been deployed\n")
