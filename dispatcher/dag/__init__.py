"""DAGs as code: YAML files are the source of truth, Postgres holds their deployed versions.

- :mod:`~dispatcher.dag.job_spec`: the frozen models of a job (:class:`JobSpec`, triggers)
- :mod:`~dispatcher.dag.spec`: :class:`DagSpec`, a whole file: its jobs and the rules across them
- :mod:`~dispatcher.dag.loader`: YAML -> spec, every problem as ``FILE:LINE: location: reason``
- :mod:`~dispatcher.dag.checks`: the rules across jobs and the dependency graph
- :mod:`~dispatcher.dag.diff`: digest and field-level diff (materialization vs execution)
- :mod:`~dispatcher.dag.store`: deploy, versions, rollback, job policies (Postgres)
- :mod:`~dispatcher.dag.cli`: ``trace dag validate | diff | deploy | versions | rollback | show``

The format is described in ``docs/dags.md``.
"""

from __future__ import annotations

from dispatcher.dag.diff import DagDiff, FieldChange, JobChange, diff, digest
from dispatcher.dag.duration import Duration
from dispatcher.dag.errors import DagError, DagValidationError, DatasetOwnedError
from dispatcher.dag.job_spec import JobSpec
from dispatcher.dag.loader import DagSource, LoadedDag, load_builtin, load_dag_file, parse_dag
from dispatcher.dag.spec import DagSpec

__all__ = [
    "DagDiff",
    "DagError",
    "DagSource",
    "DagSpec",
    "DagValidationError",
    "DatasetOwnedError",
    "Duration",
    "FieldChange",
    "JobChange",
    "JobSpec",
    "LoadedDag",
    "diff",
    "digest",
    "load_builtin",
    "load_dag_file",
    "parse_dag",
]
