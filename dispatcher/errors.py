"""What the dispatcher refuses, as errors a caller can act on (the API answers them with a 4xx)."""

from __future__ import annotations

from tracekit.errors import TraceError


class NotFound(TraceError):
    """No such run or task."""


class NotAllowed(TraceError):
    """The task's token does not allow this dataset."""
