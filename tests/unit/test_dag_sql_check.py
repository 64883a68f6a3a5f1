"""A sql_transform job's SQL is checked with the DAG file (validate, diff, deploy), as the worker
will check it: one SELECT on the parse tree, reading only the job's inputs."""

from __future__ import annotations

import pytest

from dispatcher.dag.errors import DagError
from dispatcher.dag.loader import parse_dag

DAG = """\
dag: analytics
jobs:
  - name: per_bucket
    operator: sql_transform
    activation: reactive
    triggers: [{manual: {}}]
    inputs: [blocks]
    outputs: [{dataset: per_bucket, write: {mode: replace}}]
    config: {sql: %s}
"""


def _problem(sql: str) -> str:
    with pytest.raises(DagError) as caught:
        parse_dag(DAG % sql)
    return str(caught.value)


def test_a_select_over_the_inputs_is_accepted() -> None:
    spec = parse_dag(DAG % '"select block_number // 10 as b, count(*) as n from blocks group by 1"').spec
    assert spec.job("per_bucket").config["sql"].startswith("select")


def test_bad_sql_is_named_at_its_line() -> None:
    text = _problem('"copy blocks to \'/tmp/x.csv\'"')
    assert "jobs[0].config.sql" in text and "COPY" in text
    assert "does not parse" in _problem('"select from where"')
    assert "config.sql" in _problem('""')


def test_the_sql_reads_only_the_jobs_inputs() -> None:
    text = _problem('"select * from logs"')
    assert "the SQL reads 'logs', which is not among the job's inputs (blocks)" in text
