"""Lineage of a dataset version: what made it, from which input versions (and what made those),
and which versions were built from it.

Every version records its producer (run, DAG and version, job(s), tasks, when the run started and
ended, the code that committed it) and the input versions its run read, pinned at the run's
start (``inputs``: ``{dataset: version}``). A chain dataset read from the node has no input
version: its producer (a backfill or a finalization run) and block range say where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dispatcher.datasets.store import DatasetStore
from tracekit.errors import ConfigError

MAX_DEPTH = 10
PRODUCER_KEYS = ("kind", "dag", "dag_version", "jobs", "run_id", "run_started_at", "run_finished_at",
                 "run_seconds", "code_version")


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A version as lineage shows it (no manifest)."""
    producer = row.get("producer") or {}
    return {
        "dataset_id": row["dataset_id"], "version": int(row["version"]), "state": row["state"],
        "current": bool(row.get("current")), "row_count": row["row_count"], "byte_count": row["byte_count"],
        "file_count": row["file_count"], "block_start": row["block_start"], "block_end": row["block_end"],
        "producer": {k: producer[k] for k in PRODUCER_KEYS if k in producer},
        "input_versions": {d: int(v) for d, v in (row.get("inputs") or {}).items()},
        "metadata": dict(row.get("metadata") or {}), "failure": row["failure"],
        "created_at": row["created_at"], "finished_at": row["finished_at"],
    }


def lineage(store: DatasetStore, dataset_id: str, version: int | None = None, *,
            depth: int = 3) -> dict[str, Any]:
    """``dataset_id``'s version (default: the current one) with its inputs ``depth`` levels up
    (each with its own inputs) and the versions built from it (``consumers``)."""
    if not 0 <= depth <= MAX_DEPTH:
        raise ConfigError(f"depth {depth} is out of range (0..{MAX_DEPTH})")
    root = store.version(dataset_id, version)
    node = _with_inputs(store, summary(root), depth, {(dataset_id, int(root["version"]))})
    node["consumers"] = [{"dataset_id": r["dataset_id"], "version": int(r["version"]), "state": r["state"],
                          "producer": {k: r["producer"][k] for k in PRODUCER_KEYS if k in r["producer"]}}
                         for r in store.consumers(dataset_id, int(root["version"]))]
    return node


def _with_inputs(store: DatasetStore, node: dict[str, Any], depth: int, seen: set[tuple[str, int]]
                 ) -> dict[str, Any]:
    inputs = []
    for dataset, version in sorted(node["input_versions"].items()):
        if depth == 0 or (dataset, version) in seen:
            inputs.append({"dataset_id": dataset, "version": version, "inputs": [], "truncated": depth == 0})
            continue
        try:
            row = store.version(dataset, version)
        except ConfigError:  # the dataset or version is gone (dropped by hand): say so, go on
            inputs.append({"dataset_id": dataset, "version": version, "missing": True, "inputs": []})
            continue
        inputs.append(_with_inputs(store, summary(row), depth - 1, seen | {(dataset, version)}))
    node["inputs"] = inputs
    return node
