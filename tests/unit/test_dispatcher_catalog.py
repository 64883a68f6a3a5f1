"""The job catalog's pure parts: which datasets start a job, and a deployed job row -> JobPolicy."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from dispatcher.catalog import JobPolicy, StaticJobCatalog, policy_from_row
from dispatcher.lease import RetryPolicy

# -- data triggers (the shapes a deployed spec has: JSON from state.dag_jobs.spec) -----------------


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job": "ingest",
        "operator": "cryo_ingest",
        "max_concurrency": 4,
        "max_attempts": 3,
        "backoff_initial_ms": 250,
        "backoff_max_ms": 30_000,
        "backoff_multiplier": 3.0,
        "spec": {
            "name": "ingest",
            "operator": "cryo_ingest",
            "activation": "reactive",
            "triggers": [{"dataset": "chunks"}, {"any": [{"dataset": "reorgs"}, {"cron": "0 0 * * *"}]}],
            "inputs": ["chunks", "reorgs"],
            "outputs": [{"dataset": "blocks", "write": {"mode": "append", "unique_key": ["number"]}},
                        {"dataset": "logs", "write": {"mode": "replace", "unique_key": []}}],
            "config": {"engine": "rpc", "batch": 50},
        },
    }
    row.update(overrides)
    return row


def test_a_deployed_job_row_becomes_its_policy() -> None:
    policy = policy_from_row(_row())
    assert policy == JobPolicy(
        job="ingest",
        operator="cryo_ingest",
        reads=("chunks", "reorgs"),
        writes=("blocks", "logs"),
        max_concurrency=4,
        retry=RetryPolicy(3, timedelta(milliseconds=250), timedelta(seconds=30), 3.0),
        config={"engine": "rpc", "batch": 50},
        triggers=({"dataset": "chunks"}, {"any": [{"dataset": "reorgs"}, {"cron": "0 0 * * *"}]}),
    )


def test_a_row_with_an_empty_spec_has_no_inputs_outputs_config_or_triggers() -> None:
    policy = policy_from_row(_row(spec=None, max_concurrency=None))
    assert (policy.reads, policy.writes, policy.config, policy.triggers) == ((), (), {}, ())
    assert policy.max_concurrency is None
    sparse = policy_from_row(_row(spec={"inputs": None, "outputs": None, "config": None, "triggers": None}))
    assert (sparse.reads, sparse.writes, sparse.config, sparse.triggers) == ((), (), {}, ())


def test_outputs_may_be_plain_dataset_names_and_a_numeric_multiplier_becomes_a_float() -> None:
    policy = policy_from_row(_row(spec={"outputs": ["blocks", {"dataset": "logs"}]},
                                  backoff_multiplier=Decimal("1.5")))
    assert policy.writes == ("blocks", "logs")
    assert policy.retry.multiplier == 1.5
    assert isinstance(policy.retry.multiplier, float)


def test_the_policy_does_not_share_the_rows_config() -> None:
    row = _row()
    policy = policy_from_row(row)
    row["spec"]["config"]["engine"] = "cryo"
    assert policy.config["engine"] == "rpc"


@pytest.mark.parametrize(
    "overrides",
    [{"max_attempts": 0}, {"backoff_initial_ms": 0}, {"backoff_initial_ms": 5_000, "backoff_max_ms": 1_000},
     {"backoff_multiplier": 0.5}],
)
def test_a_row_with_an_impossible_retry_policy_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        policy_from_row(_row(**overrides))


async def test_a_static_catalog_serves_its_jobs_for_every_version() -> None:
    split = JobPolicy("split", "range_splitter", writes=("chunks",))
    ingest = policy_from_row(_row())
    catalog = StaticJobCatalog({"split": split, "ingest": ingest})
    assert await catalog.jobs("default", "d", 1) == {"split": split, "ingest": ingest}
    assert await catalog.jobs("other", "e", 7) == {"split": split, "ingest": ingest}
