"""What every operator's task payload model shares: validated once, at the edge, with one clear
line naming the operator and where the payload is wrong."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from tracekit.errors import ConfigError, first_problem


class TaskPayload(BaseModel):
    """A task payload of the operator ``OPERATOR``: ``Model.parse(task.payload)``."""

    model_config = ConfigDict(frozen=True)
    OPERATOR: ClassVar[str] = "operator"

    @classmethod
    def parse(cls, payload: Any) -> Self:
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            where, problem = first_problem(exc)
            raise ConfigError(f"{cls.OPERATOR}: bad task payload at {where}: {problem}") from exc
