"""Spec digests and diffs: what a deploy changes, and whether it calls for rematerializing."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.dag.diff import EXECUTION, MATERIALIZATION, diff, digest
from dispatcher.dag.loader import parse_dag
from dispatcher.dag.spec import DagSpec

BASE: dict[str, Any] = {
    "dag": "pipeline",
    "description": "blocks to volumes",
    "jobs": [
        {"name": "split", "operator": "range_splitter", "activation": "reactive", "runtime": "dispatcher",
         "triggers": [{"manual": {}}, {"cron": "0 * * * *"}],
         "outputs": [{"dataset": "chunks", "write": {"mode": "append", "unique_key": ["start_block"]}}],
         "config": {"chunk_size": 1000}},
        {"name": "ingest", "operator": "cryo_ingest", "activation": "reactive",
         "triggers": [{"dataset": "chunks"}], "inputs": ["chunks", "labels"],
         "outputs": [{"dataset": "blocks", "write": {"mode": "append", "unique_key": ["block_number"]}},
                     {"dataset": "logs",
                      "write": {"mode": "append", "unique_key": ["block_number", "log_index"]}}],
         "scaling": {"max_concurrency": 4},
         "retry": {"max_attempts": 5, "backoff": {"initial": "1s", "max": "1m", "multiplier": 2}}},
        {"name": "volumes", "operator": "daily_volume", "activation": "reactive",
         "triggers": [{"all": [{"upstream": "ingest"}, {"interval": "1h"}], "timeout": "2h"}],
         "inputs": ["logs"], "outputs": [{"dataset": "volumes", "write": {"mode": "replace"}}]},
        {"name": "labels_sync", "operator": "label_import", "activation": "reactive",
         "triggers": [{"interval": "1d"}], "outputs": [{"dataset": "labels", "write": {"mode": "replace"}}]},
    ],
}


def spec(data: dict[str, Any] | None = None, **job_updates: dict[str, Any]) -> DagSpec:
    data = yaml.safe_load(yaml.safe_dump(data or BASE))  # a deep copy
    for job in data["jobs"]:
        job.update(job_updates.get(job["name"], {}))
    return DagSpec.model_validate(data)


def test_a_new_dag_adds_every_job_and_rematerializes_all() -> None:
    change = diff(None, spec())
    assert change.old_digest is None and not change.unchanged
    assert change.added == ("split", "ingest", "volumes", "labels_sync")
    assert change.kind == MATERIALIZATION
    assert change.rematerialize == change.added


def test_the_same_spec_is_unchanged() -> None:
    change = diff(spec(), spec())
    assert change.unchanged and change.kind is None
    assert (change.added, change.removed, change.changed, change.rematerialize) == ((), (), (), ())


def test_execution_changes_do_not_rematerialize() -> None:
    change = diff(spec(), spec(ingest={"scaling": {"max_concurrency": 8}, "description": "faster",
                                       "retry": {"max_attempts": 5, "backoff": {"initial": "2s"}}}))
    [job] = change.changed
    assert job.job == "ingest" and job.kind == EXECUTION
    assert {(c.path, c.old, c.new, c.kind) for c in job.changes} == {
        ("scaling.max_concurrency", 4, 8, EXECUTION),
        ("description", None, "faster", EXECUTION),
        ("retry.backoff.initial", "1s", "2s", EXECUTION),
    }
    assert change.kind == EXECUTION and change.rematerialize == ()


def test_materialization_changes_rematerialize_the_job_and_downstream() -> None:
    change = diff(spec(), spec(split={"config": {"chunk_size": 500}}))
    [job] = change.changed
    assert [(c.path, c.old, c.new, c.kind) for c in job.changes] == [
        ("config.chunk_size", 1000, 500, MATERIALIZATION)]
    # ingest waits for split's chunks; volumes waits for ingest; labels_sync is independent
    assert change.rematerialize == ("split", "ingest", "volumes")


def test_each_materialization_field_is_classified() -> None:
    cases: dict[str, dict[str, Any]] = {
        "operator": {"operator": "cryo_ingest_v2"},
        "runtime": {"runtime": "lambda"},
        "triggers": {"triggers": [{"dataset": "chunks"}, {"event": "reindex"}]},
        "inputs": {"inputs": ["chunks"]},
        "outputs[logs].write.mode": {"outputs": [
            {"dataset": "blocks", "write": {"mode": "append", "unique_key": ["block_number"]}},
            {"dataset": "logs", "write": {"mode": "replace"}}]},
        "config.engine": {"config": {"engine": "cryo"}},
    }
    for path, update in cases.items():
        [job] = diff(spec(), spec(ingest=update)).changed
        assert job.changes[0].path == path
        assert job.kind == MATERIALIZATION, path


def test_outputs_are_matched_by_dataset() -> None:
    [job] = diff(spec(), spec(ingest={"outputs": [
        {"dataset": "blocks", "write": {"mode": "append", "unique_key": ["block_number"]}},
        {"dataset": "traces", "write": {"mode": "replace"}}]})).changed
    assert [(c.path, c.old, c.new) for c in job.changes] == [
        ("outputs[logs]",
         {"dataset": "logs", "write": {"mode": "append", "unique_key": ["block_number", "log_index"]}}, None),
        ("outputs[traces]", None, {"dataset": "traces", "write": {"mode": "replace", "unique_key": []}}),
    ]


def test_added_and_removed_jobs() -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["jobs"] = [job for job in data["jobs"] if job["name"] != "labels_sync"]
    data["jobs"].append({"name": "alerts", "operator": "alert_evaluate", "activation": "reactive",
                         "triggers": [{"dataset": "volumes"}], "inputs": ["volumes"]})
    data["description"] = "now with alerts"
    change = diff(spec(), spec(data))
    assert change.added == ("alerts",) and change.removed == ("labels_sync",)
    assert [(c.path, c.kind) for c in change.dag_changes] == [("description", EXECUTION)]
    assert change.kind == MATERIALIZATION and change.rematerialize == ("alerts",)


def test_reordering_jobs_lists_and_keys_changes_nothing() -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["jobs"].reverse()
    for job in data["jobs"]:
        job["triggers"].reverse()
        job["outputs"] = list(reversed(job.get("outputs", [])))
        job["inputs"] = list(reversed(job.get("inputs", [])))
    assert digest(spec(data)) == digest(spec())
    assert diff(spec(), spec(data)).unchanged
    assert diff(spec(), spec(data)).changed == ()


def test_equivalent_spellings_have_one_digest() -> None:
    text = "dag: d\njobs: [{name: a, operator: op, activation: reactive, triggers: [{interval: %s}]}]"
    assert digest(parse_dag(text % "90s").spec) == digest(parse_dag(text % "1m30s").spec)
    assert digest(parse_dag(text % "90s").spec) != digest(parse_dag(text % "91s").spec)
    explicit = parse_dag("dag: d\norg: default\njobs: [{name: a, operator: op, activation: reactive, "
                         "runtime: dispatcher, triggers: [{upstream: b, on: success}]}, "
                         "{name: b, operator: op, activation: reactive, triggers: [{manual: {}}]}]").spec
    implicit = parse_dag("dag: d\njobs: [{name: a, operator: op, activation: reactive, "
                         "triggers: [{upstream: b}]}, "
                         "{name: b, operator: op, activation: reactive, triggers: [{manual: }]}]").spec
    assert digest(explicit) == digest(implicit)
    assert digest(explicit).startswith("sha256:") and len(digest(explicit)) == 7 + 64


def _shuffled(value: Any, rng: st.DataObject) -> Any:
    if isinstance(value, dict):
        keys = rng.draw(st.permutations(list(value)))
        return {key: _shuffled(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


@settings(max_examples=50)
@given(st.data())
def test_digest_is_stable_under_key_reordering(data: st.DataObject) -> None:
    shuffled = _shuffled(BASE, data)
    text = yaml.safe_dump(shuffled, sort_keys=False)
    assert digest(parse_dag(text).spec) == digest(spec())
