"""The rules across the jobs of a DAG, as a list of located issues; and its dependency graph.

Each job checks itself (:mod:`dispatcher.dag.job_spec`); these are the rules between jobs: unique
job names, upstream triggers name a job of the DAG, one writing job per dataset, and no dependency
cycles (through upstream triggers and triggers on datasets the DAG produces). Every issue carries
the location (``("jobs", 1, "triggers", 0, "upstream")``) the loader turns into a file line. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from difflib import get_close_matches

from dispatcher.dag.job_spec import (
    AllTrigger,
    AnyTrigger,
    AnyTriggerModel,
    DatasetTrigger,
    JobSpec,
    Loc,
    UpstreamTrigger,
    walk_triggers,
)
from tracekit.sqlgate import SqlRefused, check_sql


@dataclass(frozen=True, slots=True)
class Issue:
    loc: Loc
    message: str
    line: int | None = None  # when the location alone does not say (a duplicate key)


def format_loc(loc: Loc) -> str:
    """``("jobs", 1, "scaling", "max_concurrency")`` -> ``jobs[1].scaling.max_concurrency``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def suggest(word: str, known: Collection[str]) -> str:
    close = get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True, slots=True)
class JobView:
    """What the rules across jobs look at, at the job's index in the file.

    Built from a valid :class:`JobSpec`, or salvaged from a job the models rejected (its name if
    valid, its valid triggers and output datasets), so that one broken field does not hide a
    cycle or a wrong upstream elsewhere in the job.
    """

    index: int
    name: str | None
    triggers: tuple[tuple[int, AnyTriggerModel], ...]
    outputs: tuple[tuple[int, str], ...]
    inputs: tuple[str, ...] = ()

    @classmethod
    def of(cls, index: int, job: JobSpec) -> JobView:
        return cls(index, job.name, tuple(enumerate(job.triggers)),
                   tuple((k, output.dataset) for k, output in enumerate(job.outputs)), job.inputs)

    def walk(self) -> Iterator[tuple[Loc, AnyTriggerModel]]:
        """Every trigger of the job, nested ones included, with its location in the file."""
        for position, trigger in self.triggers:
            loc: Loc = ("jobs", self.index, "triggers", position)
            yield loc, trigger
            if isinstance(trigger, AllTrigger):
                nested = walk_triggers(trigger.all, (*loc, "all"))
            elif isinstance(trigger, AnyTrigger):
                nested = walk_triggers(trigger.any, (*loc, "any"))
            else:
                continue
            for nested_loc, child, _ in nested:
                yield nested_loc, child


def check_job_specs(jobs: Sequence[JobSpec]) -> list[Issue]:
    """Issues across the (valid) jobs of a DAG, in file order, then those of operator configs."""
    views = [JobView.of(index, job) for index, job in enumerate(jobs)]
    return [*check_jobs(views, {job.name for job in jobs}), *_sql_issues(jobs)]


def _sql_issues(jobs: Sequence[JobSpec]) -> list[Issue]:
    """A ``sql_transform`` job's SQL is checked when the file is (validate, diff, deploy), as its
    worker will: one SELECT, decided on the parse tree, reading only the job's inputs."""
    issues: list[Issue] = []
    for index, job in enumerate(jobs):
        if job.operator != "sql_transform":
            continue
        loc = ("jobs", index, "config", "sql")
        sql = job.config.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            issues.append(Issue(loc, "sql_transform needs config.sql: one SELECT over the job's inputs"))
            continue
        try:
            gated = check_sql(sql)
        except SqlRefused as exc:
            issues.append(Issue(loc, str(exc)))
            continue
        unread = [table for table in gated.tables if table not in job.inputs]
        if unread:
            listed = ", ".join(job.inputs) or "none"
            issues.append(Issue(loc, f"the SQL reads {unread[0]!r}, which is not among the job's inputs "
                                     f"({listed}): add it to inputs"))
    return issues


def check_jobs(jobs: Sequence[JobView], names: Collection[str]) -> list[Issue]:
    """Issues across these jobs. ``names`` are all job names the file declares (valid or not)."""
    return [*_name_issues(jobs), *_upstream_issues(jobs, names), *_writer_issues(jobs), *_cycle_issues(jobs)]


def _name_issues(jobs: Sequence[JobView]) -> list[Issue]:
    issues: list[Issue] = []
    first: dict[str, int] = {}
    for job in jobs:
        if job.name is None:
            continue
        if job.name in first:
            issues.append(Issue(("jobs", job.index, "name"),
                                f"job name {job.name!r} is already used by jobs[{first[job.name]}]"))
        first.setdefault(job.name, job.index)
    return issues


def _upstream_issues(jobs: Sequence[JobView], names: Collection[str]) -> list[Issue]:
    issues: list[Issue] = []
    for job in jobs:
        for loc, trigger in job.walk():
            if isinstance(trigger, UpstreamTrigger) and trigger.upstream not in names:
                others = sorted(set(names) - {job.name})
                known = f" (jobs of this DAG: {', '.join(others)})" if others else ""
                issues.append(Issue((*loc, "upstream"), f"no job {trigger.upstream!r} in this DAG"
                                    f"{suggest(trigger.upstream, others) or known}"))
    return issues


def _writer_issues(jobs: Sequence[JobView]) -> list[Issue]:
    issues: list[Issue] = []
    writer: dict[str, JobView] = {}
    for job in jobs:
        for k, dataset in job.outputs:
            owner = writer.setdefault(dataset, job)
            if owner is not job:
                issues.append(Issue(("jobs", job.index, "outputs", k, "dataset"),
                                    f"dataset {dataset!r} is already written by job {owner.name!r} "
                                    f"(jobs[{owner.index}]); a dataset has one writing job"))
    return issues


@dataclass(frozen=True, slots=True)
class _Edge:
    upstream: str  # the job depended on
    loc: Loc  # the trigger of the dependent job that makes the edge
    via: str


def dependency_edges(jobs: Sequence[JobView]) -> dict[str, list[_Edge]]:
    """For each named job, what it waits for: upstream triggers, triggers on the DAG's datasets."""
    named: list[tuple[str, JobView]] = []
    for job in jobs:  # a repeated name is an issue of its own; only its first job joins the graph
        if job.name is not None and all(job.name != name for name, _ in named):
            named.append((job.name, job))
    producer: dict[str, str] = {}
    for name, job in named:
        for _, dataset in job.outputs:
            producer.setdefault(dataset, name)
    edges: dict[str, list[_Edge]] = {}
    for name, job in named:
        waits = edges.setdefault(name, [])
        for loc, trigger in job.walk():
            if isinstance(trigger, UpstreamTrigger) and trigger.upstream != name:
                waits.append(_Edge(trigger.upstream, (*loc, "upstream"), "upstream"))
            elif isinstance(trigger, DatasetTrigger) and trigger.dataset in producer:
                waits.append(_Edge(producer[trigger.dataset], (*loc, "dataset"),
                                   f"dataset {trigger.dataset!r}"))
    for waits in edges.values():
        waits[:] = [edge for edge in waits if edge.upstream in edges]
    return edges


def _cycle_issues(jobs: Sequence[JobView]) -> list[Issue]:
    edges = dependency_edges(jobs)
    order: dict[str, int] = {}
    for job in jobs:
        if job.name is not None:
            order.setdefault(job.name, job.index)
    issues: list[Issue] = []
    for component in _strong_components(edges):
        start = min(component, key=lambda name: order[name])
        closing = [edge for edge in edges[start] if edge.upstream in component]
        if not closing:
            continue
        edge = min(closing, key=lambda e: tuple(map(str, e.loc)))
        # start waits for edge.upstream; follow what each waits for from there back to start
        path = _path(edges, edge.upstream, start, component)
        if len(path) <= 1:
            message = f"job {start!r} waits for its own output ({edge.via})"
        else:
            message = f"dependency cycle: {' -> '.join([*reversed(path), start])} (through {edge.via})"
        issues.append(Issue(edge.loc, message))
    return issues
def _path(edges: dict[str, list[_Edge]], source: str, target: str, within: set[str]) -> list[str]:
    """Jobs from ``source`` back to ``target`` following what each waits for (BFS), both ends included."""
    previous: dict[str, str | None] = {source: None}
    queue = [source]
    while queue:
        node = queue.pop(0)
        if node == target:
            out: list[str] = []
            cursor: str | None = node
            while cursor is not None:
                out.append(cursor)
                cursor = previous[cursor]
            return list(reversed(out))
        for edge in edges[node]:
            if edge.upstream in within and edge.upstream not in previous:
                previous[edge.upstream] = node
                queue.append(edge.upstream)
    return []


def _strong_components(edges: dict[str, list[_Edge]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (DAG files can be long)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = [e.upstream for e in edges[node]]
            if child < len(targets):
                work.append((node, child + 1))
                nxt = targets[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def downstream(jobs: Sequence[JobSpec], roots: Collection[str]) -> set[str]:
    """``roots`` and every job that (transitively) waits for one of them or reads their outputs."""
    waits = dependency_edges([JobView.of(index, job) for index, job in enumerate(jobs)])
    producer = {dataset: job.name for job in jobs for dataset in job.output_datasets}
    feeds: dict[str, set[str]] = {job.name: set() for job in jobs}
    for job in jobs:
        for edge in waits[job.name]:
            feeds[edge.upstream].add(job.name)
        for dataset in job.inputs:
            if dataset in producer and producer[dataset] != job.name:
                feeds[producer[dataset]].add(job.name)
    seen = {name for name in roots if name in feeds}
    todo = list(seen)
    while todo:
        for nxt in feeds[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
