"""What a deploy changes: a spec's digest, and the field-level diff of two specs. Pure; no I/O.

The digest is the sha256 of the spec's canonical JSON: keys sorted, durations and cron
expressions in their canonical spelling, defaults filled in, and the lists whose order means
nothing put in order (jobs by name, inputs, outputs by dataset, triggers). Two files that say
the same thing have the same digest, so deploying either again changes nothing.

Each change is classified (design doc 004): ``materialization`` changes what a job produces
(operator, activation, runtime, triggers, inputs, outputs and write modes, config) and calls for
rematerializing the job and everything downstream of it; ``execution`` changes only how it runs
(scaling, retry, descriptions).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from dispatcher.dag.checks import downstream
from dispatcher.dag.spec import DagSpec

ChangeKind = Literal["materialization", "execution"]
MATERIALIZATION: ChangeKind = "materialization"
EXECUTION: ChangeKind = "execution"

JOB_FIELD_KINDS: dict[str, ChangeKind] = {
    "operator": MATERIALIZATION,
    "activation": MATERIALIZATION,
    "runtime": MATERIALIZATION,
    "triggers": MATERIALIZATION,
    "inputs": MATERIALIZATION,
    "outputs": MATERIALIZATION,
    "config": MATERIALIZATION,
    "scaling": EXECUTION,
    "retry": EXECUTION,
    "description": EXECUTION,
}
DAG_FIELD_KINDS: dict[str, ChangeKind] = {"description": EXECUTION}


def _sorted_triggers(triggers: list[Any]) -> list[Any]:
    out = []
    for trigger in triggers:
        trigger = dict(trigger)
        for key in ("all", "any"):
            if key in trigger:
                trigger[key] = _sorted_triggers(trigger[key])
        out.append(trigger)
    return sorted(out, key=lambda t: orjson.dumps(t, option=orjson.OPT_SORT_KEYS))


def _canonical_job(job: dict[str, Any]) -> dict[str, Any]:
    return {
        **job,
        "inputs": sorted(job["inputs"]),
        "outputs": sorted(job["outputs"], key=lambda output: output["dataset"]),
        "triggers": _sorted_triggers(job["triggers"]),
    }


def canonical(spec: DagSpec) -> dict[str, Any]:
    """The spec as JSON data in canonical form (see the module docstring)."""
    data = spec.to_json()
    data["jobs"] = sorted((_canonical_job(job) for job in data["jobs"]), key=lambda job: job["name"])
    return data


def canonical_json(spec: DagSpec) -> bytes:
    return orjson.dumps(canonical(spec), option=orjson.OPT_SORT_KEYS)


def digest(spec: DagSpec) -> str:
    """``sha256:<hex>`` of the canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(spec)).hexdigest()


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str  # "retry.backoff.initial", "outputs[blocks].write.mode", "config.chunk_size"
    old: Any  # JSON data; None where the field or output did not exist
    new: Any
    kind: ChangeKind


@dataclass(frozen=True, slots=True)
class JobChange:
    job: str
    changes: tuple[FieldChange, ...]

    @property
    def kind(self) -> ChangeKind:
        return MATERIALIZATION if any(c.kind == MATERIALIZATION for c in self.changes) else EXECUTION


@dataclass(frozen=True, slots=True)
class DagDiff:
    org: str
    dag: str
    old_digest: str | None  # None: the DAG is new
    new_digest: str
    added: tuple[str, ...]  # job names, in the new file's order
    removed: tuple[str, ...]
    changed: tuple[JobChange, ...]
    dag_changes: tuple[FieldChange, ...]
    rematerialize: tuple[str, ...]  # added or materially changed jobs and all downstream of them

    @property
    def unchanged(self) -> bool:
        return self.old_digest == self.new_digest

    @property
    def kind(self) -> ChangeKind | None:
        """The weightiest kind of change, or None when nothing changed."""
        if self.added or self.removed or any(c.kind == MATERIALIZATION for c in self.changed):
            return MATERIALIZATION
        if self.changed or self.dag_changes:
            return EXECUTION
        return None


def _field_changes(path: str, old: Any, new: Any, kind: ChangeKind) -> list[FieldChange]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in [*old, *(k for k in new if k not in old)]:
            changes += _field_changes(f"{path}.{key}", old.get(key), new.get(key), kind)
        return changes
    return [FieldChange(path, old, new, kind)]


def _job_changes(old: dict[str, Any], new: dict[str, Any], shown_old: dict[str, Any], shown: dict[str, Any]
                 ) -> list[FieldChange]:
    """Changes between canonical ``old`` and ``new``; lists shown as written (``shown_old``, ``shown``)."""
    changes: list[FieldChange] = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key == "name" or old.get(key) == new.get(key):
            continue
        kind = JOB_FIELD_KINDS.get(key, MATERIALIZATION)  # a field not classified yet: the safe side
        if key == "outputs":
            before = {o["dataset"]: o for o in old.get(key, [])}
            after = {o["dataset"]: o for o in new.get(key, [])}
            for dataset in [*before, *(d for d in after if d not in before)]:
                changes += _field_changes(f"outputs[{dataset}]", before.get(dataset), after.get(dataset),
                                          kind)
        elif key in ("triggers", "inputs"):
            changes.append(FieldChange(key, shown_old.get(key), shown.get(key), kind))
        else:
            changes += _field_changes(key, old.get(key), new.get(key), kind)
    return changes


def diff(old: DagSpec | None, new: DagSpec) -> DagDiff:
    """What deploying ``new`` over ``old`` (None: nothing deployed yet) changes, job by job."""
    new_canonical = canonical(new)
    new_jobs = {job["name"]: job for job in new_canonical["jobs"]}
    shown = {job["name"]: job for job in new.to_json()["jobs"]}
    old_canonical = canonical(old) if old is not None else {"jobs": []}
    old_jobs = {job["name"]: job for job in old_canonical["jobs"]}
    shown_old = {job["name"]: job for job in (old.to_json()["jobs"] if old is not None else [])}

    added = tuple(job.name for job in new.jobs if job.name not in old_jobs)
    removed = tuple(job.name for job in (old.jobs if old is not None else ()) if job.name not in new_jobs)
    changed = []
    for job in new.jobs:
        if job.name in old_jobs:
            name = job.name
            changes = _job_changes(old_jobs[name], new_jobs[name], shown_old[name], shown[name])
            if changes:
                changed.append(JobChange(name, tuple(changes)))
    dag_changes: list[FieldChange] = []
    if old is not None:
        for key, kind in DAG_FIELD_KINDS.items():
            dag_changes += _field_changes(key, old_canonical.get(key), new_canonical.get(key), kind)

    roots = {*added, *(c.job for c in changed if c.kind == MATERIALIZATION)}
    affected = downstream(new.jobs, roots)
    return DagDiff(
        org=new.org,
        dag=new.dag,
        old_digest=digest(old) if old is not None else None,
        new_digest=digest(new),
        added=added,
        removed=removed,
        changed=tuple(changed),
        dag_changes=tuple(dag_changes),
        rematerialize=tuple(job.name for job in new.jobs if job.name in affected),
    )
