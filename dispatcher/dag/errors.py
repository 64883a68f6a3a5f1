"""Errors of DAG files and deploys; all permanent: fix the file or the command and run again."""

from __future__ import annotations

from collections.abc import Sequence

from tracekit.errors import ConfigError


class DagError(ConfigError):
    """The DAG is invalid or cannot be deployed."""


class DagValidationError(DagError):
    """The DAG file is invalid."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = tuple(lines)
        if len(self.lines) == 1:
            message = self.lines[0]
        elif self.lines:
            message = f"{len(self.lines)} problems; the first: {self.lines[0]}"
        else:
            message = None
        super().__init__(message)


class DatasetOwnedError(DagError):
    """A dataset of the DAG is produced by another DAG."""


class DagNotFound(DagError):
    """No such DAG is deployed."""


class DagVersionNotFound(DagError):
    """No such version of the DAG."""
