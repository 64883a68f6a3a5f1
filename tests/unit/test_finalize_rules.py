"""The finalizer's pure rules: when a batch may start, which watermarks a finalize run's commit
stores, and which watermark pruning follows."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher.datasets.finalize import DAG, batch_of_run, cold_watermarks, waiting, watermark_of
from operators.aggregator import DATASETS, Batch

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RETRY = dt.timedelta(seconds=30)


def _run(state: str, commit: str | None = None, ago_s: float = 1.0) -> dict[str, Any]:
    ended = NOW - dt.timedelta(seconds=ago_s)
    return {"run_id": "r", "state": state, "finished_at": None if state == "running" else ended,
            "commit_state": commit, "committed_at": ended if commit in ("done", "failed") else None}


def test_runs_are_serial_and_a_failure_waits_before_the_batch_is_tried_again() -> None:
    assert waiting(None, NOW, RETRY) is None
    assert waiting(_run("running"), NOW, RETRY) == "run r is running"
    assert waiting(_run("canceling"), NOW, RETRY) == "run r is canceling"
    assert waiting(_run("succeeded", "pending"), NOW, RETRY) == "run r waits for its commit"
    assert waiting(_run("succeeded", "done"), NOW, RETRY) is None
    assert waiting(_run("failed"), NOW, RETRY) is not None
    assert waiting(_run("failed", ago_s=31), NOW, RETRY) is None
    assert waiting(_run("succeeded", "failed"), NOW, RETRY) is not None  # the integrity check refused it
    assert waiting(_run("succeeded", "failed", ago_s=31), NOW, RETRY) is None


def test_a_finalize_run_moves_every_dataset_watermark_to_its_batch_end() -> None:
    run = {"dag": DAG, "params": {"chain_id": 1, "chain": "anvil", "start_block": 20, "end_block": 39}}
    assert batch_of_run(run) == Batch(20, 39)
    assert cold_watermarks(run, {}) == dict.fromkeys(DATASETS, 39)
    assert cold_watermarks(run, dict.fromkeys(DATASETS, 19)) == dict.fromkeys(DATASETS, 39)
    assert cold_watermarks(run, dict.fromkeys(DATASETS, 59)) == dict.fromkeys(DATASETS, 59)  # never back
    assert cold_watermarks(run, {"blocks": 9}) == {**dict.fromkeys(DATASETS, 39), "blocks": 9}  # a hole
    backfill = {"dag": "backfill", "params": {"start_block": 0, "end_block": 99}}
    assert batch_of_run(backfill) is None and cold_watermarks(backfill, {}) == {}


def test_pruning_follows_the_lowest_watermark_of_the_finalized_datasets() -> None:
    assert watermark_of({}) is None
    assert watermark_of({"blocks": 59, "logs": 39, "traces": 10}) == 39  # traces is not finalized
