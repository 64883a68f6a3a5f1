"""Rematerialization on deploy, the pure parts: which jobs a deploy builds again and in which
order (dispatcher/dag/rematerialize.py), and how far a rematerialization has got from the runs it
started (dispatcher/datasets/rematerialize.py)."""

from __future__ import annotations

from typing import Any

import yaml

from dispatcher.catalog import JobPolicy
from dispatcher.dag.diff import diff
from dispatcher.dag.rematerialize import build_order, derived_jobs, plan_rematerialization
from dispatcher.dag.spec import DagSpec
from dispatcher.datasets.commit import pinned_inputs, stale_inputs
from dispatcher.datasets.rematerialize import JobRun, input_versions, progress, upstream_jobs


def _job(name: str, inputs: list[str], outputs: list[str], sql: str = "select 1",
         operator: str = "sql_transform") -> dict[str, Any]:
    return {"name": name, "operator": operator, "activation": "reactive", "triggers": [{"manual": {}}],
            "inputs": inputs, "outputs": [{"dataset": o, "write": {"mode": "replace"}} for o in outputs],
            "config": {"sql": sql}}


ANALYTICS: dict[str, Any] = {"dag": "analytics", "jobs": [
    # listed out of dependency order on purpose: the build order comes from the dataset edges
    _job("busiest", ["per_bucket"], ["busiest"]),
    _job("per_bucket", ["blocks"], ["per_bucket"]),
    _job("tx_stats", ["transactions", "per_bucket"], ["tx_stats"]),
    _job("import", [], ["labels"], operator="label_import"),
    _job("labelled", ["labels", "blocks"], ["labelled"]),
    _job("from_events", ["some.events"], ["from_events"]),
]}
VERSIONED = {"blocks", "transactions", "logs"}


def spec(data: dict[str, Any] | None = None, **sql: str) -> DagSpec:
    data = yaml.safe_load(yaml.safe_dump(data or ANALYTICS))
    for job in data["jobs"]:
        if job["name"] in sql:
            job["config"]["sql"] = sql[job["name"]]
    return DagSpec.model_validate(data)


def test_derived_jobs_read_only_versioned_datasets_or_other_derived_outputs() -> None:
    # `import` has no inputs (a source job); `labelled` reads its unversioned output; `from_events`
    # reads an event dataset Trace does not version
    assert derived_jobs(spec(), VERSIONED) == {"per_bucket", "busiest", "tx_stats"}
    # once `labels` is a versioned dataset (its job committed versions of it), `labelled` derives too
    assert "labelled" in derived_jobs(spec(), VERSIONED | {"labels"})


def test_a_first_deploy_builds_every_derived_job_upstream_first() -> None:
    jobs = plan_rematerialization(diff(None, spec()), spec(), VERSIONED)
    assert jobs == ("per_bucket", "busiest", "tx_stats")


def test_a_changed_job_is_built_again_with_everything_downstream_only() -> None:
    old, new = spec(), spec(per_bucket="select 2")
    assert plan_rematerialization(diff(old, new), new, VERSIONED) == ("per_bucket", "busiest", "tx_stats")
    new = spec(busiest="select 3")
    assert plan_rematerialization(diff(old, new), new, VERSIONED) == ("busiest",)


def test_an_unchanged_or_execution_only_deploy_builds_nothing() -> None:
    assert plan_rematerialization(diff(spec(), spec()), spec(), VERSIONED) == ()
    data = yaml.safe_load(yaml.safe_dump(ANALYTICS))
    data["jobs"][0]["description"] = "the busiest bucket"
    new = DagSpec.model_validate(data)
    assert plan_rematerialization(diff(spec(), new), new, VERSIONED) == ()


def test_build_order_keeps_the_file_order_between_independent_jobs() -> None:
    assert build_order(spec(), {"tx_stats", "busiest", "per_bucket"}) == ("per_bucket", "busiest", "tx_stats")


POLICIES = {name: JobPolicy(name, "sql_transform", reads=tuple(r), writes=tuple(w)) for name, r, w in [
    ("a", ["blocks"], ["x"]), ("b", ["x"], ["y"]), ("c", ["x", "logs"], ["z"])]}
UP = upstream_jobs(["a", "b", "c"], POLICIES)


def test_upstream_jobs_follow_the_datasets_they_read() -> None:
    assert UP == {"a": (), "b": ("a",), "c": ("a",)}


def test_progress_starts_jobs_once_their_upstream_is_built_then_completes() -> None:
    assert progress(["a", "b", "c"], UP, {}).start == ("a",)
    running = {"a": JobRun("r1", "running", None)}
    assert progress(["a", "b", "c"], UP, running).start == ()
    committing = {"a": JobRun("r1", "succeeded", "pending")}
    assert progress(["a", "b", "c"], UP, committing).start == ()
    a_done = {"a": JobRun("r1", "succeeded", "done", {"x": 4})}
    now = progress(["a", "b", "c"], UP, a_done)
    assert (now.start, dict(now.built), now.complete) == (("b", "c"), {"x": 4}, False)
    all_done = {**a_done, "b": JobRun("r2", "succeeded", "done", {"y": 1}),
                "c": JobRun("r3", "succeeded", "done", {"z": 2})}
    now = progress(["a", "b", "c"], UP, all_done)
    assert (now.start, dict(now.built), now.complete) == ((), {"x": 4, "y": 1, "z": 2}, True)
    assert now.failed is None


def test_progress_fails_on_a_failed_run_a_failed_commit_or_a_run_without_files() -> None:
    failed = progress(["a"], UP, {"a": JobRun("r1", "failed", None, error="bad SQL")})
    assert failed.failed == "job a: run r1 ended failed: bad SQL" and not failed.complete
    refused = progress(["a"], UP, {"a": JobRun("r1", "succeeded", "failed", error="duplicate key")})
    assert refused.failed == "job a: the commit of run r1 failed: duplicate key"
    empty = progress(["a"], UP, {"a": JobRun("r1", "succeeded", None)})
    assert empty.failed == "job a: run r1 succeeded without staging a file"


def test_inputs_are_the_built_versions_of_datasets_rebuilt_here_else_the_current_ones() -> None:
    pinned, missing = input_versions(["x", "logs"], {"x": 7}, {"x": 3, "logs": 12}, ["x", "y", "z"])
    assert (pinned, missing) == ({"x": 7, "logs": 12}, None)
    assert input_versions(["logs"], {}, {}, ["x"]) == ({}, "it reads logs, which has no current version")
    assert input_versions(["x"], {}, {"x": 3}, ["x"]) == ({}, "it reads x, which has no built version")


def test_a_run_that_read_what_it_writes_commits_only_over_the_version_it_read() -> None:
    assert pinned_inputs({"inputs": {"blocks": {"version": 4, "snapshot_id": 9}, "logs": 2, "bad": "x"}}) == {
        "blocks": 4, "logs": 2}
    assert pinned_inputs({}) == {} and pinned_inputs({"inputs": [1]}) == {}
    assert stale_inputs(["blocks"], {"blocks": 4}, {"blocks": 4}) is None
    assert stale_inputs(["per_bucket"], {"blocks": 4}, {"blocks": 5}) is None  # read, not written
    assert stale_inputs(["blocks"], {"blocks": 4}, {"blocks": 5}) == (
        "blocks: the run read version 4, but version 5 is current now; run it again on the current version")
