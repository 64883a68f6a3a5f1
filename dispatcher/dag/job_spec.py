"""A job of a DAG file: its triggers, outputs, scaling and retry, as frozen pydantic models (the
format: docs/dags.md).

Each model checks its own shape, types and rules (unknown keys, ranges, write modes, what a source
job may be triggered by, ...), reporting every problem at its own location. The rules across the
jobs of a DAG live in :mod:`dispatcher.dag.checks`, and :class:`~dispatcher.dag.spec.DagSpec`
(the whole file) runs them. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Strict,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatcher.dag.cron import normalize_cron
from dispatcher.dag.duration import Duration

Loc = tuple[str | int, ...]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ORG = re.compile(r"[a-z][a-z0-9_-]*")
_EVENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 63
MAX_DATASET_ID = 200


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > MAX_NAME:
            raise ValueError(f"{value[:20]!r}...: {what} has at most {MAX_NAME} characters")
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what} (it must match {pattern.pattern})")
        return value

    return AfterValidator(check)


def _dataset_id(value: str) -> str:
    if not value:
        raise ValueError("a dataset id cannot be empty")
    if len(value) > MAX_DATASET_ID:
        raise ValueError(f"a dataset id has at most {MAX_DATASET_ID} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"dataset id {value!r} contains whitespace or control characters")
    return value


def _cron(value: str) -> str:
    return normalize_cron(value)


Name = Annotated[str, Strict(), _matching(_NAME, "name")]
OrgId = Annotated[str, Strict(), _matching(_ORG, "org id")]
EventName = Annotated[str, Strict(), _matching(_EVENT, "event name")]
ColumnName = Annotated[str, Strict(), _matching(_COLUMN, "column name")]
DatasetId = Annotated[str, Strict(), AfterValidator(_dataset_id)]
CronText = Annotated[str, Strict(), AfterValidator(_cron)]
Text = Annotated[str, Strict()]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]

Activation = Literal["source", "reactive"]
Runtime = Literal["lambda", "ecs_platform", "dispatcher"]
WriteMode = Literal["append", "replace"]


RULE_ERROR = "dag_rule"  # the error type of the rules below; the message is in ctx["message"]


def fail(model: str, issues: Sequence[tuple[Loc, str]], value: Any) -> None:
    """Raise every issue at its own location (relative to the value being validated), if any."""
    if issues:
        raise ValidationError.from_exception_data(model, [
            InitErrorDetails(type=PydanticCustomError(RULE_ERROR, "{message}", {"message": message}),
                             loc=loc, input=value)
            for loc, message in issues
        ])


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------- triggers


class CronTrigger(SpecModel):
    """Time-based: fires at the minutes a five-field cron expression names (UTC)."""

    cron: CronText


class IntervalTrigger(SpecModel):
    """Time-based: fires every ``interval``, counted from the deploy."""

    interval: Duration


class DatasetTrigger(SpecModel):
    """Data-driven: fires once per new-data event of the dataset (of this DAG or another)."""

    dataset: DatasetId


class EventTrigger(SpecModel):
    """Event-based: fires once per named external signal (a webhook, an API call)."""

    event: EventName


class UpstreamTrigger(SpecModel):
    """Dependency: fires when a task of another job of this DAG finishes (``on``: success or any)."""

    upstream: Name
    on: Literal["success", "any"] = "success"


class ManualOptions(SpecModel):
    """No options yet; ``{manual: {}}``."""


class ManualTrigger(SpecModel):
    """Manual: a user asks for a run (``trace`` CLI, the API)."""

    manual: ManualOptions = ManualOptions()

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        if isinstance(data, dict) and "manual" in data and data["manual"] is None:
            return {**data, "manual": {}}
        return data


class AllTrigger(SpecModel):
    """Composite AND: fires once every child has fired since it last fired.

    With ``timeout``: the window opens at the first child firing; if it reaches ``timeout`` with
    children still missing, ``on_timeout: fire`` (the default) fires with what arrived and
    ``expire`` drops the window; either way the next child firing opens a new one.
    """

    all: Annotated[tuple[Trigger, ...], Field(min_length=2)]
    timeout: Duration | None = None
    on_timeout: Literal["fire", "expire"] | None = None  # "fire" once there is a timeout

    @model_validator(mode="before")
    @classmethod
    def _default_on_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("timeout") is not None and "on_timeout" not in data:
            return {**data, "on_timeout": "fire"}
        return data

    @field_validator("all")
    @classmethod
    def _no_manual(cls, value: tuple[AnyTriggerModel, ...]) -> tuple[AnyTriggerModel, ...]:
        return _no_manual_inside("AllTrigger", value)

    @model_validator(mode="after")
    def _timeout(self) -> Self:
        if self.on_timeout is not None and self.timeout is None:
            fail("AllTrigger", [(("on_timeout",), "on_timeout needs a timeout")], self.on_timeout)
        return self


class AnyTrigger(SpecModel):
    """Composite OR: fires when any child fires; with ``timeout``, also when none has for that long."""

    any: Annotated[tuple[Trigger, ...], Field(min_length=2)]
    timeout: Duration | None = None

    @field_validator("any")
    @classmethod
    def _no_manual(cls, value: tuple[AnyTriggerModel, ...]) -> tuple[AnyTriggerModel, ...]:
        return _no_manual_inside("AnyTrigger", value)


def _no_manual_inside(model: str, triggers: tuple[AnyTriggerModel, ...]) -> tuple[AnyTriggerModel, ...]:
    fail(model, [((index,), "manual cannot be part of all/any; list {manual: {}} as a trigger of its own")
                 for index, trigger in enumerate(triggers) if isinstance(trigger, ManualTrigger)], triggers)
    return triggers


TRIGGER_MODELS: dict[str, type[SpecModel]] = {
    "cron": CronTrigger,
    "interval": IntervalTrigger,
    "dataset": DatasetTrigger,
    "event": EventTrigger,
    "upstream": UpstreamTrigger,
    "manual": ManualTrigger,
    "all": AllTrigger,
    "any": AnyTrigger,
}
TAG_PREFIX = "trigger:"  # pydantic puts the tag into error locations; the loader drops it


def trigger_kind(value: Any) -> str | None:
    """Which kind of trigger a mapping (or model) is: its one key out of TRIGGER_MODELS."""
    if isinstance(value, BaseModel):
        for kind, model in TRIGGER_MODELS.items():
            if isinstance(value, model):
                return kind
        return None
    if not isinstance(value, dict):
        return None
    kinds = [kind for kind in TRIGGER_MODELS if kind in value]
    return kinds[0] if len(kinds) == 1 else None


def _tag(value: Any) -> str | None:
    kind = trigger_kind(value)
    return None if kind is None else TAG_PREFIX + kind


Trigger = Annotated[
    Annotated[CronTrigger, Tag(TAG_PREFIX + "cron")]
    | Annotated[IntervalTrigger, Tag(TAG_PREFIX + "interval")]
    | Annotated[DatasetTrigger, Tag(TAG_PREFIX + "dataset")]
    | Annotated[EventTrigger, Tag(TAG_PREFIX + "event")]
    | Annotated[UpstreamTrigger, Tag(TAG_PREFIX + "upstream")]
    | Annotated[ManualTrigger, Tag(TAG_PREFIX + "manual")]
    | Annotated[AllTrigger, Tag(TAG_PREFIX + "all")]
    | Annotated[AnyTrigger, Tag(TAG_PREFIX + "any")],
    Discriminator(
        _tag,
        custom_error_type="trigger_kind",
        custom_error_message="a trigger is a mapping with exactly one of the keys "
        + ", ".join(TRIGGER_MODELS),
    ),
]

AnyTriggerModel = (
    CronTrigger | IntervalTrigger | DatasetTrigger | EventTrigger | UpstreamTrigger | ManualTrigger
    | AllTrigger | AnyTrigger
)

AllTrigger.model_rebuild()
AnyTrigger.model_rebuild()


def walk_triggers(triggers: tuple[AnyTriggerModel, ...], loc: Loc = ("triggers",)) -> Iterator[
        tuple[Loc, AnyTriggerModel, int]]:
    """Every trigger, nested ones included, with its location and nesting depth (0 = top level)."""

    def walk(items: tuple[AnyTriggerModel, ...], at: Loc, depth: int) -> Iterator[
            tuple[Loc, AnyTriggerModel, int]]:
        for index, trigger in enumerate(items):
            here = (*at, index)
            yield here, trigger, depth
            if isinstance(trigger, AllTrigger):
                yield from walk(trigger.all, (*here, "all"), depth + 1)
            elif isinstance(trigger, AnyTrigger):
                yield from walk(trigger.any, (*here, "any"), depth + 1)

    return walk(triggers, loc, 0)


# ------------------------------------------------------------------------------------- jobs


class WriteSpec(SpecModel):
    """How a job writes a dataset: ``append`` rows deduplicated on ``unique_key``, or ``replace``."""

    mode: WriteMode
    unique_key: tuple[ColumnName, ...] = ()

    @model_validator(mode="after")
    def _key_fits_mode(self) -> Self:
        issues: list[tuple[Loc, str]] = []
        if self.mode == "append" and not self.unique_key:
            issues.append((("unique_key",), "append needs a non-empty unique_key: the columns that "
                                            "identify a row, so that a retried task does not duplicate rows"))
        if self.mode == "replace" and self.unique_key:
            issues.append((("unique_key",), "replace takes no unique_key (every committed run replaces "
                                            "the dataset)"))
        issues += [(("unique_key", index), f"column {column!r} is listed twice")
                   for index, column in enumerate(self.unique_key) if column in self.unique_key[:index]]
        fail("WriteSpec", issues, self.unique_key)
        return self


class OutputSpec(SpecModel):
    dataset: DatasetId
    write: WriteSpec


class ScalingSpec(SpecModel):
    max_concurrency: PositiveInt | None = None  # tasks of the job leased at once; None: no limit


class BackoffSpec(SpecModel):
    initial: Duration = Duration(1_000)
    max: Duration = Duration(60_000)
    multiplier: Annotated[float, Strict(), Field(ge=1.0)] = 2.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.initial > self.max:
            fail("BackoffSpec", [(("initial",), f"initial backoff ({self.initial}) is longer than max "
                                                f"({self.max})")], str(self.initial))
        return self


class RetrySpec(SpecModel):
    max_attempts: PositiveInt = 3  # attempts in all, the first one included
    backoff: BackoffSpec = BackoffSpec()


class JobSpec(SpecModel):
    name: Name
    description: Text | None = None
    operator: Name
    activation: Activation
    runtime: Runtime = "dispatcher"
    triggers: Annotated[tuple[Trigger, ...], Field(validate_default=True)] = ()
    inputs: tuple[DatasetId, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    scaling: ScalingSpec = ScalingSpec()
    retry: RetrySpec = RetrySpec()
    config: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("triggers", mode="after")
    @classmethod
    def _triggers_fit_activation(cls, value: tuple[AnyTriggerModel, ...], info: ValidationInfo
                                 ) -> tuple[AnyTriggerModel, ...]:
        activation, name = info.data.get("activation"), info.data.get("name")
        if activation == "reactive" and not value:
            raise ValueError("a reactive job needs at least one trigger (it runs only when one fires)")
        issues: list[tuple[Loc, str]] = []
        for index, trigger in enumerate(value):
            if activation == "source" and not isinstance(trigger, ManualTrigger):
                issues.append(((index,), "a source job runs continuously once deployed; the only trigger "
                                         "it takes is manual"))
            if trigger in value[:index]:
                issues.append(((index,), "the same trigger is listed twice"))
        for loc, trigger, _ in walk_triggers(value, ()):
            if isinstance(trigger, UpstreamTrigger) and trigger.upstream == name:
                issues.append(((*loc, "upstream"), "a job cannot depend on its own completion"))
        fail("JobSpec", issues, value)
        return value

    @field_validator("inputs", mode="after")
    @classmethod
    def _inputs_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        fail("JobSpec", [((index,), f"dataset {dataset!r} is listed twice")
                         for index, dataset in enumerate(value) if dataset in value[:index]], value)
        return value

    @field_validator("outputs", mode="after")
    @classmethod
    def _outputs_once(cls, value: tuple[OutputSpec, ...]) -> tuple[OutputSpec, ...]:
        datasets = [output.dataset for output in value]
        fail("JobSpec", [((index, "dataset"), f"this job already writes {dataset!r} "
                                              f"(outputs[{datasets.index(dataset)}])")
                         for index, dataset in enumerate(datasets) if dataset in datasets[:index]], value)
        return value

    @model_validator(mode="after")
    def _reads_what_triggers_it(self) -> Self:
        fail("JobSpec", [((*loc, "dataset"), f"the job runs on new data of {trigger.dataset!r}, so list it "
                                             "in inputs")
                         for loc, trigger, _ in walk_triggers(self.triggers)
                         if isinstance(trigger, DatasetTrigger) and trigger.dataset not in self.inputs],
             self.inputs)
        return self

    @property
    def output_datasets(self) -> tuple[str, ...]:
        return tuple(output.dataset for output in self.outputs)

    @property
    def trigger_datasets(self) -> tuple[str, ...]:
        """Datasets whose new data fires this job on its own (top-level dataset triggers)."""
        return tuple(t.dataset for t in self.triggers if isinstance(t, DatasetTrigger))

    @property
    def upstream_jobs(self) -> tuple[str, ...]:
        """Jobs of the DAG this one depends on through upstream triggers (nested ones too)."""
        found = [t.upstream for _, t, _ in walk_triggers(self.triggers) if isinstance(t, UpstreamTrigger)]
        return tuple(dict.fromkeys(found))
