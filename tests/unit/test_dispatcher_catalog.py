"""The job catalog's pure parts: which datasets start a job, and a deployed job row -> JobPolicy."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.catalog import JobPolicy, StaticJobCatalog, data_triggers, policy_from_row
from dispatcher.lease import RetryPolicy

# -- data triggers (the shapes a deployed spec has: JSON from state.dag_jobs.spec) -----------------


def test_dataset_triggers_at_top_level_and_inside_any_start_the_job() -> None:
    triggers: list[dict[str, Any]] = [
        {"dataset": "chunks"},
        {"any": [{"dataset": "blocks"}, {"cron": "0 * * * *"}], "timeout": None},
        {"any": [{"any": [{"dataset": "logs"}, {"event": "reindex"}]}, {"interval": "1h"}]},
    ]
    assert data_triggers(triggers) == {"chunks", "blocks", "logs"}


def test_time_event_upstream_manual_and_all_triggers_are_not_data_triggers() -> None:
    triggers: list[dict[str, Any]] = [
        {"cron": "*/5 * * * *"},
        {"interval": "10m"},
        {"event": "price-update"},
        {"upstream": "split", "on": "success"},
        {"manual": {}},
        {"all": [{"dataset": "blocks"}, {"dataset": "logs"}], "timeout": "1h", "on_timeout": "fire"},
    ]
    assert data_triggers(triggers) == set()
    assert data_triggers([]) == set()


leaf = st.one_of(
    st.builds(lambda d: {"dataset": d}, st.text(min_size=1, max_size=8)),
    st.builds(lambda c: {"cron": c}, st.sampled_from(["0 * * * *", "*/5 * * * *"])),
    st.just({"manual": {}}),
)
triggers_tree = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=2, max_size=3)),
    ),
    max_leaves=12,
)


def _expected(trigger: dict[str, Any]) -> set[str]:
    if "dataset" in trigger:
        return {trigger["dataset"]}
    if "any" in trigger:
        return set().union(*(_expected(t) for t in trigger["any"]))
    return set()  # an "all" composite waits for its own scheduler


@given(st.lists(triggers_tree, max_size=4))
def test_data_triggers_are_the_datasets_reachable_through_any_only(triggers: list[dict[str, Any]]) -> None:
    assert data_triggers(triggers) == set().union(*(_expected(t) for t in triggers))


def test_an_any_composite_given_as_a_tuple_also_counts() -> None:
    assert data_triggers([{"any": ({"dataset": "a"}, {"dataset": "b"})}]) == {"a", "b"}


# -- policy_from_row --------------------------------------------------------------------------------


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
    assert data_triggers(policy.triggers) == {"chunks", "reorgs"}


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


async def test_a_static_catalog_names_the_jobs_an_event_triggers() -> None:
    split = JobPolicy("split", "range_splitter", writes=("chunks",))
    ingest = policy_from_row(_row())
    catalog = StaticJobCatalog({"split": split, "ingest": ingest})
    assert await catalog.jobs("default", "d", 1) == {"split": split, "ingest": ingest}
    assert await catalog.triggered_by("default", "d", 1, "chunks") == [ingest]
    assert await catalog.triggered_by("default", "d", 1, "reorgs") == [ingest]
    assert await catalog.triggered_by("default", "d", 1, "blocks") == []
