"""``trace datasets compact`` without --partition: one partition after the other, each planned from
the version the previous commit made, until none is left; a run that fails stops it with one line.
The planning, the run and the commit are stand-ins here (tests/integration/test_dataset_compact.py
runs them for real)."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg_pool
import pytest
from typer.testing import CliRunner

import dispatcher.datasets.compact as compact_module
from dispatcher.datasets.cli import app
from dispatcher.datasets.compact import Outcome, Plan, Started
from operators.parquet_compact import SnapshotFile, partitions, to_compact

W = 10_000


class _Pool:
    """No database: the stand-ins below do not use it."""

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


class _Chain:
    """A logs dataset whose partitions 0, 10000 and 20000 hold 3, 1 and 2 files at version 1; each
    commit makes the next version with that partition in one file."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.files = {0: 3, W: 1, 2 * W: 2}
        self.version = 1
        self.runs: dict[uuid.UUID, int] = {}
        self.afters: list[int | None] = []
        self.fail_at = fail_at

    def plan(self, min_files: int, after: int | None) -> Plan:
        files = [SnapshotFile(start, start + i * 10, start + i * 10 + 9, f"s3://d/{start}-{i}", 10, 100)
                 for start, n in self.files.items() for i in range(n)]
        parts = partitions(files, W)
        chosen = [p for p in to_compact(parts, min_files) if after is None or p.start > after]
        return Plan("logs", min_files, self.version, "chain.logs", 1000 + self.version, tuple(parts),
                    tuple(chosen))

    async def compact_next(self, *_: Any, min_files: int, after: int | None, **__: Any) -> Started:
        self.afters.append(after)
        plan = self.plan(min_files, after)
        if not plan.chosen:
            return Started(plan)
        run = uuid.uuid4()
        self.runs[run] = plan.chosen[0].start
        return Started(plan, run, True, plan.chosen[1:])

    def wait_commit(self, _url: str, _org: str, run_id: uuid.UUID) -> Outcome:
        start = self.runs[run_id]
        if start == self.fail_at:
            return Outcome("succeeded", "failed", "blocks: gap: blocks 30..9989 missing")
        self.files[start] = 1
        self.version += 1
        return Outcome("succeeded", "done", None, {"logs": self.version})


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _Chain:
    made = _Chain()
    monkeypatch.setenv("TRACE_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    monkeypatch.setenv("TRACE_OBJECT_STORE", tmp_path.as_uri())
    monkeypatch.setattr(psycopg_pool, "AsyncConnectionPool", _Pool)
    monkeypatch.setattr(compact_module, "compact_next", made.compact_next)
    monkeypatch.setattr(compact_module, "wait_commit", made.wait_commit)
    return made


def test_every_partition_with_enough_files_in_turn(chain: _Chain) -> None:
    result = CliRunner().invoke(app, ["compact", "logs"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(" -> run ")[0] for line in lines[0::2][:2]] == [
        "logs partition 0..9999 (blocks 0..29) of version 1: 3 files, 30 rows",
        "logs partition 20000..29999 (blocks 20000..20019) of version 2: 2 files, 20 rows"]
    assert lines[1::2][:2] == ["  committed: logs version 2", "  committed: logs version 3"]
    assert lines[4:] == ["compacted 2 partition(s) of logs: version 3 is current"]
    assert chain.afters == [None, 0, 20_000]  # each plan from the new version, after the last done


def test_every_partition_even_with_one_file_ends(chain: _Chain) -> None:
    result = CliRunner().invoke(app, ["compact", "logs", "--min-files", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "compacted 3 partition(s) of logs: version 4 is current"
    assert chain.afters == [None, 0, 10_000, 20_000]


def test_no_wait_starts_one_run(chain: _Chain) -> None:
    result = CliRunner().invoke(app, ["compact", "logs", "--no-wait"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == ["1 more partition(s) to compact once it is committed"]
    assert chain.version == 1 and len(chain.runs) == 1


def test_a_failed_commit_stops_with_its_reason(chain: _Chain) -> None:
    chain.fail_at = 0
    result = CliRunner().invoke(app, ["compact", "logs"])
    assert result.exit_code == 1
    assert str(result.exception).endswith(
        "(logs partition 0..9999): commit failed: blocks: gap: blocks 30..9989 missing")
    assert chain.version == 1 and len(chain.runs) == 1


def test_nothing_to_compact_is_a_line(chain: _Chain) -> None:
    chain.files = {0: 1}
    result = CliRunner().invoke(app, ["compact", "logs"])
    assert result.exit_code == 0, result.output
    assert result.output == ("nothing to compact: no partition of logs version 1 has 2 files or more "
                             "(1 partition(s), at most 1 file(s) each)\n")
