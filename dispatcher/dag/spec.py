"""The DAG spec: what a DAG file says, as a frozen pydantic model (the format: docs/dags.md).

A :class:`DagSpec` is its jobs (:mod:`dispatcher.dag.job_spec`, each checking its own rules) plus
the rules across them (:mod:`dispatcher.dag.checks`: names, upstream references, one writer per
dataset, cycles), which it runs after validating (the YAML loader runs them itself, so that it can
also check the valid jobs of a file with broken ones). A valid spec is always a consistent DAG. Pure.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import Field, ValidationInfo, model_validator

from dispatcher.dag.checks import check_job_specs
from dispatcher.dag.job_spec import JobSpec, Name, OrgId, SpecModel, Text, fail

SKIP_CHECKS = "dag_skip_checks"  # validation context key: the loader runs the checks itself


class DagSpec(SpecModel):
    dag: Name
    org: OrgId = "default"
    description: Text | None = None
    jobs: Annotated[tuple[JobSpec, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, dict) and info.context.get(SKIP_CHECKS):
            return self
        fail("DagSpec", [(issue.loc, issue.message) for issue in check_job_specs(self.jobs)], self.dag)
        return self

    def job(self, name: str) -> JobSpec:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    @property
    def output_datasets(self) -> tuple[str, ...]:
        return tuple(dataset for job in self.jobs for dataset in job.output_datasets)

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON-ready data (durations as strings); :meth:`model_validate` reads it back."""
        return self.model_dump(mode="json")
