"""DAG files: the documented example loads; every rule fails with FILE:LINE: location: reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from dispatcher.dag.duration import Duration
from dispatcher.dag.errors import DagValidationError
from dispatcher.dag.job_spec import (
    AllTrigger,
    AnyTrigger,
    CronTrigger,
    DatasetTrigger,
    EventTrigger,
    IntervalTrigger,
    ManualTrigger,
    UpstreamTrigger,
)
from dispatcher.dag.loader import check_together, load_builtin, load_dag_file, parse_dag
from dispatcher.dag.spec import DagSpec

EXAMPLE = """\
dag: monad_backfill
org: default
description: Monad history, chunk by chunk.
jobs:
  - name: split
    operator: range_splitter
    activation: reactive
    runtime: dispatcher
    triggers: [{manual: {}}]
    outputs: [{dataset: monad.range_chunks, write: {mode: append, unique_key: [start_block]}}]
    config: {chunk_size: 1000}
  - name: ingest
    operator: cryo_ingest
    activation: reactive
    runtime: dispatcher
    triggers: [{dataset: monad.range_chunks}]
    inputs: [monad.range_chunks]
    outputs:
      - {dataset: monad.blocks, write: {mode: append, unique_key: [block_number]}}
      - {dataset: monad.logs, write: {mode: replace}}
    scaling: {max_concurrency: 4}
    retry: {max_attempts: 5, backoff: {initial: 1s, max: 5m, multiplier: 2}}
    config: {engine: rpc, datasets: [blocks, transactions, logs]}
  - name: rollup
    operator: daily_volume
    activation: reactive
    runtime: lambda
    triggers:
      - {cron: "0  3 * * mon-fri"}
      - {interval: 1h30m}
      - {event: prices.refreshed}
      - all: [{upstream: ingest, on: any}, {dataset: monad.logs}]
        timeout: 1h
      - {any: [{event: a}, {event: b}], timeout: 10m}
    inputs: [monad.logs]
    outputs: [{dataset: monad.daily_volume, write: {mode: replace}}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(DagValidationError) as caught:
        parse_dag(textwrap.dedent(text), "dag.yaml")
    return list(caught.value.lines)


def test_the_documented_example_loads() -> None:
    loaded = parse_dag(EXAMPLE, "example.yaml")
    spec = loaded.spec
    assert (spec.dag, spec.org, [j.name for j in spec.jobs]) == ("monad_backfill", "default",
                                                                ["split", "ingest", "rollup"])
    ingest = spec.job("ingest")
    assert ingest.scaling.max_concurrency == 4
    assert ingest.retry.max_attempts == 5
    assert (ingest.retry.backoff.initial, ingest.retry.backoff.max) == (Duration(1000), Duration(300_000))
    assert ingest.outputs[0].write.unique_key == ("block_number",)
    assert ingest.outputs[1].write.mode == "replace"
    assert ingest.config == {"engine": "rpc", "datasets": ["blocks", "transactions", "logs"]}
    assert ingest.trigger_datasets == ("monad.range_chunks",)
    rollup = spec.job("rollup")
    cron, interval, event, both, either = rollup.triggers
    assert isinstance(cron, CronTrigger) and cron.cron == "0 3 * * mon-fri"  # canonical spacing
    assert isinstance(interval, IntervalTrigger) and interval.interval == Duration(5_400_000)
    assert isinstance(event, EventTrigger) and event.event == "prices.refreshed"
    assert isinstance(both, AllTrigger) and both.timeout == Duration(3_600_000) and both.on_timeout == "fire"
    assert isinstance(both.all[0], UpstreamTrigger) and both.all[0].on == "any"
    assert isinstance(both.all[1], DatasetTrigger)
    assert isinstance(either, AnyTrigger) and either.timeout == Duration(600_000)
    assert rollup.upstream_jobs == ("ingest",)
    assert isinstance(spec.job("split").triggers[0], ManualTrigger)
    assert loaded.line_of(("jobs", 1, "scaling", "max_concurrency")) == 21


def test_defaults_are_filled_in() -> None:
    spec = parse_dag("dag: d\njobs: [{name: a, operator: op, activation: reactive, "
                     "triggers: [{manual: }]}]").spec
    job = spec.jobs[0]
    assert (spec.org, job.runtime, job.scaling.max_concurrency, job.retry.max_attempts) == (
        "default", "dispatcher", None, 3)
    assert (str(job.retry.backoff.initial), str(job.retry.backoff.max), job.retry.backoff.multiplier) == (
        "1s", "1m", 2.0)


def test_the_spec_round_trips_through_json() -> None:
    spec = parse_dag(EXAMPLE).spec
    assert DagSpec.model_validate(spec.to_json()) == spec


def test_the_builtin_backfill_dag() -> None:
    spec = load_builtin("backfill")
    split, ingest = spec.jobs
    assert (split.name, split.operator, split.output_datasets) == (
        "split", "range_splitter", ("backfill.chunks",))
    assert isinstance(split.triggers[0], ManualTrigger)
    assert (ingest.operator, ingest.trigger_datasets, ingest.inputs) == (
        "cryo_ingest", ("backfill.chunks",), ("backfill.chunks",))
    assert {o.dataset: o.write.unique_key for o in ingest.outputs} == {
        "blocks": ("block_number",),
        "transactions": ("block_number", "transaction_index"),
        "logs": ("block_number", "log_index"),
        "traces": ("block_number", "transaction_index", "trace_address"),  # written only when asked for
    }
    assert all(o.write.mode == "append" for o in ingest.outputs)
    assert ingest.scaling.max_concurrency == 4
    assert ingest.retry.max_attempts == 5
    assert ingest.config == {"engine": "rpc", "datasets": ["blocks", "transactions", "logs"]}
    backoff = ingest.retry.backoff
    assert (str(backoff.initial), str(backoff.max), backoff.multiplier) == ("1s", "1m", 2.0)


def test_a_builtin_dag_for_another_org() -> None:
    assert load_builtin("backfill", org="acme").org == "acme"
    assert load_builtin("backfill", org="acme").jobs == load_builtin("backfill").jobs
    with pytest.raises(DagValidationError, match="org 'Bad Org': 'Bad Org' is not a valid org id"):
        load_builtin("backfill", org="Bad Org")


def test_an_unknown_builtin_is_a_clear_error() -> None:
    with pytest.raises(DagValidationError, match=r"no built-in DAG 'nope' .*backfill"):
        load_builtin("nope")
    with pytest.raises(DagValidationError):
        load_builtin("../backfill")


# ------------------------------------------------------------------------------------ rules

JOB = """\
dag: d
jobs:
  - name: a
    operator: op
    activation: reactive
"""  # the next line is line 6


@pytest.mark.parametrize(("tail", "expected"), [
    pytest.param("    triggers: [{manual: {}}]\n    colour: blue\n",
                 "dag.yaml:7: jobs[0].colour: unknown key 'colour' (allowed: name, description, operator, "
                 "activation, runtime, triggers, inputs, outputs, scaling, retry, config)", id="unknown-key"),
    pytest.param("    triggers: [{manual: {}}]\n    scalling: {max_concurrency: 1}\n",
                 "dag.yaml:7: jobs[0].scalling: unknown key 'scalling'; did you mean 'scaling'?",
                 id="unknown-key-suggestion"),
    pytest.param("    triggers: [{manual: {}}]\n    scaling:\n      max_concurrency: 0\n",
                 "dag.yaml:8: jobs[0].scaling.max_concurrency: must be at least 1", id="max-concurrency"),
    pytest.param("    triggers: [{manual: {}}]\n    scaling: {max_concurrency: \"4\"}\n",
                 "dag.yaml:7: jobs[0].scaling.max_concurrency: must be an integer, not a string", id="type"),
    pytest.param("    triggers: [{manual: {}}]\n    retry: {max_attempts: 0}\n",
                 "dag.yaml:7: jobs[0].retry.max_attempts: must be at least 1", id="max-attempts"),
    pytest.param("    triggers: [{manual: {}}]\n    retry:\n      backoff: {initial: 5m, max: 1m}\n",
                 "dag.yaml:8: jobs[0].retry.backoff.initial: initial backoff (5m) is longer than max (1m)",
                 id="backoff-order"),
    pytest.param("    triggers: [{manual: {}}]\n    retry: {backoff: {multiplier: 0.5}}\n",
                 "dag.yaml:7: jobs[0].retry.backoff.multiplier: must be at least 1.0", id="multiplier"),
    pytest.param("    runtime: k8s\n    triggers: [{manual: {}}]\n",
                 "dag.yaml:6: jobs[0].runtime: must be 'lambda', 'ecs_platform' or 'dispatcher', not 'k8s'",
                 id="runtime"),
    pytest.param("    outputs: []\n",
                 "dag.yaml:3: jobs[0].triggers: a reactive job needs at least one trigger "
                 "(it runs only when one fires)", id="reactive-needs-trigger"),
    pytest.param("    triggers: [{manual: {}}]\n    outputs:\n      - dataset: x\n"
                 "        write: {mode: append}\n",
                 "dag.yaml:9: jobs[0].outputs[0].write.unique_key: append needs a non-empty unique_key: the "
                 "columns that identify a row, so that a retried task does not duplicate rows",
                 id="append-needs-key"),
    pytest.param("    triggers: [{manual: {}}]\n    outputs:\n      - dataset: x\n"
                 "        write: {mode: append, unique_key: []}\n",
                 "dag.yaml:9: jobs[0].outputs[0].write.unique_key: append needs a non-empty unique_key: the "
                 "columns that identify a row, so that a retried task does not duplicate rows",
                 id="append-empty-key"),
    pytest.param("    triggers: [{manual: {}}]\n    outputs:\n      - dataset: x\n        write:\n"
                 "          mode: replace\n          unique_key: [id]\n",
                 "dag.yaml:11: jobs[0].outputs[0].write.unique_key: replace takes no unique_key "
                 "(every committed run replaces the dataset)", id="replace-forbids-key"),
    pytest.param("    triggers: [{manual: {}}]\n    outputs:\n      - {dataset: x, write: {mode: upsert}}\n",
                 "dag.yaml:8: jobs[0].outputs[0].write.mode: must be 'append' or 'replace', not 'upsert'",
                 id="write-mode"),
    pytest.param("    triggers: [{manual: {}}]\n    outputs:\n      - {dataset: x, write: {mode: replace}}\n"
                 "      - {dataset: x, write: {mode: replace}}\n",
                 "dag.yaml:9: jobs[0].outputs[1].dataset: this job already writes 'x' (outputs[0])",
                 id="output-twice"),
    pytest.param("    triggers: [{manual: {}}]\n    inputs: [x, y, x]\n",
                 "dag.yaml:7: jobs[0].inputs[2]: dataset 'x' is listed twice", id="input-twice"),
    pytest.param("    triggers:\n      - dataset: x\n",
                 "dag.yaml:7: jobs[0].triggers[0].dataset: the job runs on new data of 'x', "
                 "so list it in inputs",
                 id="dataset-trigger-reads-it"),
    pytest.param("    triggers:\n      - {cron: \"*/5 * * *\"}\n",
                 "dag.yaml:7: jobs[0].triggers[0].cron: cron '*/5 * * *' has 4 field(s); it needs 5: minute "
                 "hour day-of-month month day-of-week (like '*/5 * * * *')", id="cron-fields"),
    pytest.param("    triggers:\n      - {cron: \"0 24 * * *\"}\n",
                 "dag.yaml:7: jobs[0].triggers[0].cron: hour field: 24 is outside 0-23", id="cron-range"),
    pytest.param("    triggers:\n      - interval: 30\n",
                 "dag.yaml:7: jobs[0].triggers[0].interval: 30 needs a unit: 500ms, 30s, 5m, 1h or 1d",
                 id="interval-unit"),
    pytest.param("    triggers:\n      - interval: 5 min\n",
                 "dag.yaml:7: jobs[0].triggers[0].interval: '5 min' is not a duration like 500ms, 30s, "
                 "5m, 1h, 1d or 1h30m", id="interval-format"),
    pytest.param("    triggers:\n      - {webhook: x}\n",
                 "dag.yaml:7: jobs[0].triggers[0]: a trigger is a mapping with exactly one of the keys cron, "
                 "interval, dataset, event, upstream, manual, all, any", id="trigger-kind"),
    pytest.param("    triggers:\n      - {upstream: a}\n",
                 "dag.yaml:7: jobs[0].triggers[0].upstream: a job cannot depend on its own completion",
                 id="upstream-self"),
    pytest.param("    triggers:\n      - {upstream: b}\n",
                 "dag.yaml:7: jobs[0].triggers[0].upstream: no job 'b' in this DAG", id="upstream-unknown"),
    pytest.param("    triggers:\n      - {upstream: a, on: failure}\n",
                 "dag.yaml:7: jobs[0].triggers[0].on: must be 'success' or 'any', not 'failure'",
                 id="upstream-on"),
    pytest.param("    triggers:\n      - {interval: 1m, cron: \"* * * * *\"}\n",
                 "dag.yaml:7: jobs[0].triggers[0]: a trigger is a mapping with exactly one of the keys cron, "
                 "interval, dataset, event, upstream, manual, all, any", id="trigger-two-kinds"),
    pytest.param("    triggers:\n      - {manual: {}}\n      - {manual: {}}\n",
                 "dag.yaml:8: jobs[0].triggers[1]: the same trigger is listed twice", id="trigger-twice"),
    pytest.param("    triggers:\n      - all: [{event: x}]\n",
                 "dag.yaml:7: jobs[0].triggers[0].all: all combines at least 2 triggers (for one, list the "
                 "trigger itself)", id="all-one-child"),
    pytest.param("    triggers:\n      - all: [{event: x}, {event: y}]\n        on_timeout: expire\n",
                 "dag.yaml:8: jobs[0].triggers[0].on_timeout: on_timeout needs a timeout", id="on-timeout"),
    pytest.param("    triggers:\n      - any: [{event: x}, {event: y}]\n        on_timeout: fire\n",
                 "dag.yaml:8: jobs[0].triggers[0].on_timeout: unknown key 'on_timeout'; "
                 "did you mean 'timeout'?",
                 id="any-has-no-on-timeout"),
    pytest.param("    triggers:\n      - any:\n          - {event: x}\n          - {manual: {}}\n",
                 "dag.yaml:9: jobs[0].triggers[0].any[1]: manual cannot be part of all/any; "
                 "list {manual: {}} as a trigger of its own", id="manual-nested"),
    pytest.param("    triggers:\n      - all: [{event: x}, {event: y}]\n        timeout: 0s\n",
                 "dag.yaml:8: jobs[0].triggers[0].timeout: '0s': a duration must be longer than zero",
                 id="timeout-zero"),
    pytest.param("    triggers:\n      - {upstream: a, interval: 1m}\n",
                 "dag.yaml:7: jobs[0].triggers[0]: a trigger is a mapping with exactly one of the keys cron, "
                 "interval, dataset, event, upstream, manual, all, any", id="upstream-plus-interval"),
    pytest.param("    triggers:\n      - {event: \"has space\"}\n",
                 "dag.yaml:7: jobs[0].triggers[0].event: 'has space' is not a valid event name "
                 "(it must match [A-Za-z0-9][A-Za-z0-9_.:/-]*)", id="event-name"),
])
def test_each_rule_names_file_line_location_and_reason(tail: str, expected: str) -> None:
    found = problems(JOB + tail)
    assert expected in found, "\n".join(found)


def test_a_source_job_takes_only_manual_triggers() -> None:
    found = problems("""\
        dag: d
        jobs:
          - name: follow
            operator: block_follower
            activation: source
            triggers:
              - manual: {}
              - interval: 1m
        """)
    assert found == ["dag.yaml:8: jobs[0].triggers[1]: a source job runs continuously once deployed; "
                     "the only trigger it takes is manual"]
    parse_dag("dag: d\njobs: [{name: follow, operator: block_follower, activation: source}]")


def test_a_missing_key_points_at_its_job() -> None:
    found = problems("""\
        dag: d
        jobs:
          - name: a
            activation: reactive
            triggers: [{manual: {}}]
        """)
    assert found == ["dag.yaml:3: jobs[0].operator: required key is missing"]


def test_names_are_unique_and_well_formed() -> None:
    found = problems("""\
        dag: My-Dag
        jobs:
          - {name: a, operator: op, activation: reactive, triggers: [{manual: {}}]}
          - {name: a, operator: op, activation: reactive, triggers: [{manual: {}}]}
          - {name: 2b, operator: op, activation: reactive, triggers: [{manual: {}}]}
        """)
    assert found == [
        "dag.yaml:1: dag: 'My-Dag' is not a valid name (it must match [a-z][a-z0-9_]*)",
        "dag.yaml:4: jobs[1].name: job name 'a' is already used by jobs[0]",
        "dag.yaml:5: jobs[2].name: '2b' is not a valid name (it must match [a-z][a-z0-9_]*)",
    ]


def test_a_dataset_has_one_writing_job() -> None:
    found = problems("""\
        dag: d
        jobs:
          - name: a
            operator: op
            activation: reactive
            triggers: [{manual: {}}]
            outputs: [{dataset: shared, write: {mode: replace}}]
          - name: b
            operator: op
            activation: reactive
            triggers: [{manual: {}}]
            outputs:
              - {dataset: mine, write: {mode: replace}}
              - {dataset: shared, write: {mode: replace}}
        """)
    assert found == ["dag.yaml:14: jobs[1].outputs[1].dataset: dataset 'shared' is already written by "
                     "job 'a' (jobs[0]); a dataset has one writing job"]


def test_upstream_cycles_are_found() -> None:
    found = problems("""\
        dag: d
        jobs:
          - name: a
            operator: op
            activation: reactive
            triggers: [{upstream: c}]
          - name: b
            operator: op
            activation: reactive
            triggers: [{upstream: a}]
          - name: c
            operator: op
            activation: reactive
            triggers:
              - all: [{upstream: b}, {event: go}]
        """)
    assert found == ["dag.yaml:6: jobs[0].triggers[0].upstream: dependency cycle: a -> b -> c -> a "
                     "(through upstream)"]


def test_dataset_trigger_cycles_are_found() -> None:
    found = problems("""\
        dag: d
        jobs:
          - name: a
            operator: op
            activation: reactive
            triggers: [{dataset: y}]
            inputs: [y]
            outputs: [{dataset: x, write: {mode: replace}}]
          - name: b
            operator: op
            activation: reactive
            triggers: [{dataset: x}]
            inputs: [x]
            outputs: [{dataset: y, write: {mode: replace}}]
          - name: c
            operator: op
            activation: reactive
            triggers: [{dataset: z}]
            inputs: [z]
            outputs: [{dataset: z, write: {mode: replace}}]
        """)
    assert found == [
        "dag.yaml:6: jobs[0].triggers[0].dataset: dependency cycle: a -> b -> a (through dataset 'y')",
        "dag.yaml:18: jobs[2].triggers[0].dataset: job 'c' waits for its own output (dataset 'z')",
    ]


def test_a_job_may_read_its_own_output_and_datasets_of_other_dags() -> None:
    parse_dag("""\
dag: d
jobs:
  - name: a
    operator: op
    activation: reactive
    triggers: [{dataset: other_dag.prices}]
    inputs: [other_dag.prices, state]
    outputs: [{dataset: state, write: {mode: replace}}]
""")


def test_every_problem_of_a_file_is_reported() -> None:
    found = problems("""\
        dag: d
        jobs:
          - name: a
            operator: op
            activation: reactiv
            triggers: [{manual: {}}]
            outputs: [{dataset: x, write: {mode: append}}]
          - name: b
            operator: op
            activation: reactive
            triggers: [{upstream: c}, {cron: "61 * * * *"}]
            scaling: {max_concurrency: 0}
            outputs: [{dataset: x, write: {mode: replace}}]
        """)
    assert found == [
        "dag.yaml:5: jobs[0].activation: must be 'source' or 'reactive', not 'reactiv'",
        "dag.yaml:7: jobs[0].outputs[0].write.unique_key: append needs a non-empty unique_key: the columns "
        "that identify a row, so that a retried task does not duplicate rows",
        "dag.yaml:11: jobs[1].triggers[0].upstream: no job 'c' in this DAG (jobs of this DAG: a)",
        "dag.yaml:11: jobs[1].triggers[1].cron: minute field: 61 is outside 0-59",
        "dag.yaml:12: jobs[1].scaling.max_concurrency: must be at least 1",
        "dag.yaml:13: jobs[1].outputs[0].dataset: dataset 'x' is already written by job 'a' (jobs[0]); "
        "a dataset has one writing job",
    ]
    with pytest.raises(DagValidationError, match=r"^6 problems; the first: dag.yaml:5: "):
        parse_dag(textwrap.dedent("""\
            dag: d
            jobs:
              - name: a
                operator: op
                activation: reactiv
                triggers: [{manual: {}}]
                outputs: [{dataset: x, write: {mode: append}}]
              - name: b
                operator: op
                activation: reactive
                triggers: [{upstream: c}, {cron: "61 * * * *"}]
                scaling: {max_concurrency: 0}
                outputs: [{dataset: x, write: {mode: replace}}]
            """), "dag.yaml")


# ------------------------------------------------------------------------------------- YAML


def test_malformed_yaml_reports_the_parser_error_and_line() -> None:
    found = problems("dag: d\njobs:\n  - name: a\n    operator: [op\n    activation: reactive\n")
    assert found == ["dag.yaml:5: invalid YAML: while parsing a flow sequence: expected ',' or ']', "
                     "but got ':' (it started on line 4)"]


def test_yaml_tabs_are_a_yaml_error() -> None:
    found = problems("dag: d\njobs:\n\t- name: a\n")
    assert found[0].startswith("dag.yaml:3: invalid YAML:")


def test_duplicate_and_non_string_keys() -> None:
    found = problems("dag: d\njobs:\n  - name: a\n    operator: op\n    operator: op2\n    1: x\n"
                     "    activation: reactive\n    triggers: [{manual: }]\n")
    assert found == ["dag.yaml:5: jobs[0].operator: duplicate key 'operator' (first on line 4)",
                     "dag.yaml:6: jobs[0]: a key must be a string, not 1 (quote it)"]


def test_empty_file_list_and_several_documents() -> None:
    assert problems("") == ["dag.yaml:1: the file is empty; a DAG file maps dag, jobs, ..."]
    assert problems("- a\n- b\n") == ["dag.yaml:1: must be a mapping, not a list"]
    assert problems("dag: d\njobs: []\n") == ["dag.yaml:2: jobs: a DAG needs at least one job"]
    assert problems("dag: d\n---\ndag: e\n")[0].startswith(
        "dag.yaml:2: invalid YAML: expected a single document")


def test_yaml_1_1_booleans_and_dates_stay_strings() -> None:
    spec = parse_dag("""\
dag: d
jobs:
  - name: a
    operator: op
    activation: reactive
    triggers: [{upstream: b, on: any}]
    config: {flag: on, day: 2024-01-01, address: 0x00ff, yes_no: no, real: true, n: 010}
  - name: b
    operator: op
    activation: reactive
    triggers: [{manual: {}}]
""").spec
    assert spec.jobs[0].config == {"flag": "on", "day": "2024-01-01", "address": "0x00ff", "yes_no": "no",
                                   "real": True, "n": "010"}


def test_anchors_and_merge_keys_work() -> None:
    spec = parse_dag("""\
dag: d
jobs:
  - &base
    name: a
    operator: op
    activation: reactive
    triggers: [{manual: {}}]
    retry: {max_attempts: 7}
  - <<: *base
    name: b
""").spec
    assert [(j.name, j.retry.max_attempts) for j in spec.jobs] == [("a", 7), ("b", 7)]


def test_unreadable_file() -> None:
    with pytest.raises(DagValidationError, match=r"nope\.yaml: cannot read: No such file"):
        load_dag_file("nope.yaml")


# ------------------------------------------------------------------------ models from code


def test_a_spec_built_in_code_runs_the_rules_across_jobs_too() -> None:
    with pytest.raises(ValidationError, match="dependency cycle: a -> b -> a"):
        DagSpec.model_validate({"dag": "d", "jobs": [
            {"name": "a", "operator": "op", "activation": "reactive", "triggers": [{"upstream": "b"}]},
            {"name": "b", "operator": "op", "activation": "reactive", "triggers": [{"upstream": "a"}]},
        ]})


def test_specs_are_frozen() -> None:
    spec = parse_dag(EXAMPLE).spec
    with pytest.raises(ValidationError):
        spec.dag = "other"  # type: ignore[misc]


# ------------------------------------------------------------------------------ across files


def test_two_dags_cannot_produce_the_same_dataset() -> None:
    first = parse_dag(EXAMPLE, "a.yaml")
    second = parse_dag("""\
dag: other
jobs:
  - name: x
    operator: op
    activation: reactive
    triggers: [{manual: {}}]
    outputs:
      - {dataset: monad.logs, write: {mode: replace}}
""", "b.yaml")
    assert check_together([first, second]) == [
        "b.yaml:8: jobs[0].outputs[0].dataset: dataset 'monad.logs' is also produced by dag 'monad_backfill' "
        "(a.yaml); a dataset has one producing DAG"]
    assert check_together([first, parse_dag(EXAMPLE, "c.yaml")]) == [
        "c.yaml:1: dag: dag 'monad_backfill' is also defined in a.yaml:1"]


def test_the_full_example_of_the_docs_is_valid() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "dags.md").read_text(encoding="utf-8")
    example = docs.split("## A full example\n\n```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_dag(example, "docs/dags.md").spec
    assert [job.name for job in spec.jobs] == ["split", "ingest", "follow", "daily_volume", "refresh_labels"]
