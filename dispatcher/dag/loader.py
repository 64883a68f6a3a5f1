"""DAG files -> :class:`DagSpec`, with every problem reported as ``FILE:LINE: location: reason``.

The YAML is loaded by :mod:`tracekit.yamlfile` into plain data and a map from each location
(``("jobs", 1, "scaling", "max_concurrency")``) to its line, then validated by the models and
:mod:`dispatcher.dag.checks`. Every problem of the file is reported, not just the first:
when the models reject the file, each job that is valid on its own still goes through the checks.

Scalars follow YAML 1.2: only ``true``/``false`` are booleans (``on:`` stays a key, ``no`` a
string), integers are decimal without leading zeros, and dates, ``0x..`` or ``010`` stay strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from dispatcher.dag.checks import Issue, JobView, check_job_specs, check_jobs, format_loc, suggest
from dispatcher.dag.errors import DagValidationError
from dispatcher.dag.job_spec import (
    TAG_PREFIX,
    TRIGGER_MODELS,
    BackoffSpec,
    DatasetId,
    JobSpec,
    Loc,
    ManualOptions,
    Name,
    OutputSpec,
    RetrySpec,
    ScalingSpec,
    Trigger,
    WriteSpec,
)
from dispatcher.dag.spec import SKIP_CHECKS, DagSpec
from tracekit.yamlfile import YamlDoc, YamlError, load_yaml, nearest_line, read_yaml


@dataclass(frozen=True, slots=True)
class DagSource:
    """Where a spec came from: the file's path (as given) and its text."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class LoadedDag:
    spec: DagSpec
    source: DagSource
    lines: Mapping[Loc, int]  # location -> 1-based line

    def line_of(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor in the file (a missing key: its mapping)."""
        return nearest_line(self.lines, loc)

    def where(self, loc: Loc) -> str:
        return f"{self.source.path}:{self.line_of(loc)}"


# ---------------------------------------------------------------------- pydantic -> messages

_CHILD_MODELS: dict[str, type[BaseModel]] = {
    "jobs": JobSpec, "outputs": OutputSpec, "write": WriteSpec, "scaling": ScalingSpec,
    "retry": RetrySpec, "backoff": BackoffSpec, "manual": ManualOptions,
}
_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
          dict: "a mapping", type(None): "empty (null)"}
_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number",
    "bool_type": "true or false", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _model_at(raw_loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = DagSpec
    for part in raw_loc:
        if isinstance(part, int):
            continue
        if part.startswith(TAG_PREFIX):
            model = TRIGGER_MODELS[part.removeprefix(TAG_PREFIX)]
        elif part in _CHILD_MODELS:
            model = _CHILD_MODELS[part]
        elif part in ("triggers", "all", "any"):
            model = None  # an index and a tag follow
        else:
            return None
    return model


def _type_name(value: Any) -> str:
    return _TYPES.get(type(value), type(value).__name__)


def _message(error: ErrorDetails) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        parent = _model_at(error["loc"][:-1])
        if key in TRIGGER_MODELS and parent in TRIGGER_MODELS.values():
            return f"a trigger has one kind; make {key!r} a trigger of its own (or combine them with all/any)"
        known = list(parent.model_fields) if parent is not None else []
        allowed = f" (allowed: {', '.join(known)})" if known else ""
        return f"unknown key {key!r}{suggest(key, known) or allowed}"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {_type_name(value)}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, not {value!r}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "too_short":
        if isinstance(value, list) and len(value) >= ctx.get("min_length", 0):
            return ""  # long enough; its items have problems of their own
        field = error["loc"][-1] if error["loc"] else ""
        if field == "jobs":
            return "a DAG needs at least one job"
        if field in ("all", "any"):
            return f"{field} combines at least 2 triggers (for one, list the trigger itself)"
        return f"must have at least {ctx.get('min_length')} item(s), not {ctx.get('actual_length')}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


def _clean(raw_loc: tuple[int | str, ...]) -> Loc:
    return tuple(p for p in raw_loc if not (isinstance(p, str) and p.startswith(TAG_PREFIX)))


def _model_issues(exc: ValidationError) -> list[Issue]:
    issues = [Issue(_clean(error["loc"]), _message(error)) for error in exc.errors(include_url=False)]
    return [issue for issue in issues if issue.message]


# ------------------------------------------------------------------------------- the loader


_TRIGGER = TypeAdapter(Trigger)
_NAME = TypeAdapter(Name)
_DATASET = TypeAdapter(DatasetId)


def _salvage(index: int, raw: Any) -> JobView | None:
    """The parts of a job the models rejected that are valid on their own, for the checks across jobs."""
    if not isinstance(raw, dict):
        return None

    def valid(adapter: TypeAdapter[Any], value: Any) -> bool:
        try:
            adapter.validate_python(value)
        except ValidationError:
            return False
        return True

    def items(key: str) -> list[Any]:
        value = raw.get(key)
        return value if isinstance(value, list) else []

    name = raw["name"] if valid(_NAME, raw.get("name")) else None
    triggers, outputs, inputs = items("triggers"), items("outputs"), items("inputs")
    return JobView(
        index,
        name,
        tuple((k, _TRIGGER.validate_python(t)) for k, t in enumerate(triggers) if valid(_TRIGGER, t)),
        tuple((k, o["dataset"]) for k, o in enumerate(outputs)
              if isinstance(o, dict) and valid(_DATASET, o.get("dataset"))),
        tuple(dataset for dataset in inputs if valid(_DATASET, dataset)),
    )


def _validate(data: Any) -> tuple[DagSpec | None, list[Issue]]:
    try:
        spec = DagSpec.model_validate(data, context={SKIP_CHECKS: True})
    except ValidationError as exc:
        issues = _model_issues(exc)
        raw_jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(raw_jobs, list):
            return None, issues
        views: list[JobView] = []
        for index, raw in enumerate(raw_jobs):
            try:
                views.append(JobView.of(index, JobSpec.model_validate(raw)))
            except ValidationError:  # its problems are among the issues already
                view = _salvage(index, raw)
                if view is not None:
                    views.append(view)
        names = {str(job["name"]) for job in raw_jobs if isinstance(job, dict) and "name" in job}
        return None, issues + check_jobs(views, names)
    issues = check_job_specs(spec.jobs)
    return (None if issues else spec), issues


def format_issues(path: str, lines: Mapping[Loc, int], issues: Sequence[Issue]) -> list[str]:
    """``FILE:LINE: loc: reason`` lines, in file order, without repeats."""
    located = sorted({(i.line or nearest_line(lines, i.loc), format_loc(i.loc), i.message) for i in issues})
    return [f"{path}:{line}: {loc}: {msg}" if loc else f"{path}:{line}: {msg}" for line, loc, msg in located]


def parse_dag(text: str, path: str = "<string>") -> LoadedDag:
    """Parse and validate one DAG file's text; raises DagValidationError with every problem."""
    try:
        doc = load_yaml(text, path)
    except YamlError as exc:
        raise DagValidationError([str(exc)]) from exc
    return _loaded(doc)


def load_dag_file(path: str | Path) -> LoadedDag:
    try:
        doc = read_yaml(path)
    except YamlError as exc:
        raise DagValidationError([str(exc)]) from exc
    return _loaded(doc)


def _loaded(doc: YamlDoc) -> LoadedDag:
    path = doc.source
    if doc.empty:
        raise DagValidationError([f"{path}:1: the file is empty; a DAG file maps dag, jobs, ..."])
    spec, more = _validate(doc.data)
    issues = [Issue(issue.loc, issue.message, issue.line) for issue in doc.issues] + more
    if issues or spec is None:
        raise DagValidationError(format_issues(path, doc.lines, issues) or [f"{path}:1: invalid DAG"])
    return LoadedDag(spec, DagSource(path, doc.text), doc.lines)


def check_together(dags: Sequence[LoadedDag]) -> list[str]:
    """Problems only visible across files: a DAG defined twice, a dataset two DAGs produce."""
    problems: list[str] = []
    defined: dict[tuple[str, str], LoadedDag] = {}
    producer: dict[tuple[str, str], tuple[str, LoadedDag]] = {}
    for loaded in dags:
        spec = loaded.spec
        first = defined.setdefault((spec.org, spec.dag), loaded)
        if first is not loaded:
            problems.append(f"{loaded.where(('dag',))}: dag: dag {spec.dag!r} is also defined in "
                            f"{first.where(('dag',))}")
            continue
        for j, job in enumerate(spec.jobs):
            for k, output in enumerate(job.outputs):
                owner = producer.setdefault((spec.org, output.dataset), (spec.dag, loaded))
                if owner[0] != spec.dag and not {owner[0], spec.dag} <= CHAIN_DAGS:
                    loc = ("jobs", j, "outputs", k, "dataset")
                    problems.append(f"{loaded.where(loc)}: {format_loc(loc)}: dataset {output.dataset!r} is "
                                    f"also produced by dag {owner[0]!r} ({owner[1].source.path}); "
                                    "a dataset has one producing DAG")
    return problems


# ----------------------------------------------------------------------------- built-in DAGs

_BUILTIN_NAME = re.compile(r"[a-z][a-z0-9_]*")

CHAIN_DAGS = frozenset({"backfill", "finalize", "compact"})
"""The built-in DAGs that write the chain datasets together: ``backfill`` the history a user asks
for, ``finalize`` the final blocks of the hot tables, ``compact`` a partition's files rewritten as
one. Each of their runs replaces only its own block range, so they share ownership: none refuses
the others' datasets (the first keeps the claim)."""


def builtin_names() -> list[str]:
    folder = resources.files("dispatcher").joinpath("dags")
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir()
                  if entry.name.endswith(".yaml"))


def load_builtin_dag(name: str, org: str | None = None) -> LoadedDag:
    """A DAG shipped with Trace (``dispatcher/dags/<name>.yaml``), with its source.

    ``org``: the org to deploy it for (the files say none, so ``default``).
    """
    if not _BUILTIN_NAME.fullmatch(name) or name not in builtin_names():
        raise DagValidationError([f"no built-in DAG {name!r} (there are: {', '.join(builtin_names())})"])
    text = resources.files("dispatcher").joinpath("dags", f"{name}.yaml").read_text(encoding="utf-8")
    loaded = parse_dag(text, f"dispatcher/dags/{name}.yaml")
    if org is None or org == loaded.spec.org:
        return loaded
    try:
        spec = DagSpec.model_validate({**loaded.spec.to_json(), "org": org})
    except ValidationError as exc:
        raise DagValidationError([f"org {org!r}: {_model_issues(exc)[0].message}"]) from exc
    return LoadedDag(spec, loaded.source, loaded.lines)


def load_builtin(name: str, org: str | None = None) -> DagSpec:
    """The spec of a built-in DAG (for ``org``, default ``default``)."""
    return load_builtin_dag(name, org).spec
