"""The worker runtime: consumes wake-ups, claims tasks through the dispatcher's internal API,
runs operators with heartbeats and reports completion. See :mod:`.runtime`."""

from __future__ import annotations

from dispatcher.worker.client import DispatcherClient, DispatcherRefused, Fenced
from dispatcher.worker.context import Canceled, TaskContext, WorkerEnv
from dispatcher.worker.operators import OPERATORS
from dispatcher.worker.runtime import Worker, WorkerStats

__all__ = ["OPERATORS", "Canceled", "DispatcherClient", "DispatcherRefused", "Fenced", "TaskContext",
           "Worker", "WorkerEnv", "WorkerStats"]
