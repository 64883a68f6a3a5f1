"""Which jobs a deploy rematerializes, in which order. Pure; no I/O.

A deploy's :class:`~dispatcher.dag.diff.DagDiff` names the jobs added or materially changed and
every job downstream of them (``rematerialize``). Of those, the ones rebuilt from scratch are the
**derived** jobs: a job that reads only datasets whose versions Trace keeps (a dataset registered
in ``state.datasets``, or the output of another derived job of the DAG) and writes at least one.
A source job (no inputs: a backfill's splitter, the finalizer's aggregator) or a job reading a
dataset Trace does not version (an event dataset such as ``backfill.chunks``) is left alone: it
is given its range by whoever starts it.

The order is a topological one over the jobs' dataset edges (a job after the jobs whose outputs
it reads), ties in the file's order, so each job is built from its upstream's new versions.
"""

from __future__ import annotations

import graphlib
from collections.abc import Collection, Sequence

from dispatcher.dag.diff import DagDiff
from dispatcher.dag.spec import DagSpec


def derived_jobs(spec: DagSpec, versioned: Collection[str]) -> set[str]:
    """The jobs of ``spec`` that derive datasets from datasets Trace versions (``versioned``: the
    datasets registered for the org)."""
    producer = {dataset: job.name for job in spec.jobs for dataset in job.output_datasets}
    derived: set[str] = set()
    grew = True
    while grew:
        grew = False
        for job in spec.jobs:
            if job.name in derived or not job.inputs or not job.outputs:
                continue
            if all(d in versioned or producer.get(d) in derived for d in job.inputs
                   if producer.get(d) != job.name):
                derived.add(job.name)
                grew = True
    return derived


def build_order(spec: DagSpec, jobs: Collection[str]) -> tuple[str, ...]:
    """``jobs`` in an order where a job comes after those of ``jobs`` whose outputs it reads (the
    file's order otherwise)."""
    chosen = [job for job in spec.jobs if job.name in jobs]
    producer = {dataset: job.name for job in chosen for dataset in job.output_datasets}
    position = {job.name: index for index, job in enumerate(chosen)}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for job in chosen:
        sorter.add(job.name, *(producer[d] for d in job.inputs if d in producer and producer[d] != job.name))
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return tuple(order)


def plan_rematerialization(change: DagDiff, spec: DagSpec, versioned: Collection[str]) -> tuple[str, ...]:
    """The derived jobs a deploy of ``spec`` (whose diff against the active version is ``change``)
    builds again, in build order; empty when the deploy changes no derived job's output."""
    derived = derived_jobs(spec, versioned)
    return build_order(spec, [job for job in change.rematerialize if job in derived])


def upstream_of(spec: DagSpec, job: str, among: Sequence[str]) -> tuple[str, ...]:
    """The jobs of ``among`` whose outputs ``job`` reads."""
    reads = set(spec.job(job).inputs)
    return tuple(other for other in among
                 if other != job and reads & set(spec.job(other).output_datasets))
