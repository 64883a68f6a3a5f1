"""The errors of the backfill ingest operator (all under :class:`~tracekit.errors.TraceError`)."""

from __future__ import annotations

from tracekit.errors import RetryableError, RpcUnavailable


class NotYetConfirmed(RetryableError):
    """The chunk reaches past the confirmed head; nothing was read. Retry once the chain has grown."""


class RateLimited(RpcUnavailable):
    """The JSON-RPC endpoint is rate limiting us (HTTP 429 or a rate-limit JSON-RPC error)."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CryoFailed(RetryableError):
    """cryo failed inside its Rust code (a panic; its details are on stderr)."""
