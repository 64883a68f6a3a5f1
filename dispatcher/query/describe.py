"""The catalog of what an org can query (``GET /v1/catalog``, ``trace datasets search``): each view
with its description, columns and types, current version, rows, block range and freshness (the
cold watermark, and how far its newest block is behind the chain head the follower saw).

Rows and block range are what a query sees (hot and cold as one: one query per view through the
engine, pinned like any other); columns come from the chain datasets' contracts, and from the
engine's result schema for the other views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row

from dispatcher.query.engine import CHAIN_VIEWS, STATE_VIEWS, Limits, QueryEngine
from tracekit.datasets import load_contracts
from tracekit.db import connect
from tracekit.db.queries import load_queries

_SQL = load_queries("dispatcher.sql", "query.sql")
STATE_DESCRIPTIONS = {
    "prices": "USD prices of tokens by time (the price feed), global.",
    "labels": "Address labels of this org.",
    "alerts": "Alerts fired for this org (retracted_at set when a reorg removed their block).",
}


def describe(engine: QueryEngine) -> list[dict[str, Any]]:
    """Every view of the engine's org, described (see the module doc), by name."""
    with connect(engine.url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_SQL.sql("catalog_datasets"), {"org": engine.org})
        registered = {r["dataset_id"]: r for r in cur.fetchall()}
        cur.execute(_SQL.sql("newest_set"), {"org": engine.org})
        newest = cur.fetchone()
        cur.execute(_SQL.sql("chain_head"), {"chain": engine.chain_id})
        head_row = cur.fetchone()
    head = None if head_row is None else head_row["head"]
    seq = int(newest["seq"]) if newest else 0
    pointers = dict(newest["pointers"]) if newest else {}
    watermarks = dict(newest["watermarks"]) if newest else {}
    contracts = load_contracts()
    derived = sorted(d for d, r in registered.items() if r["kind"] == "derived")
    found = []
    for name in [*CHAIN_VIEWS, *STATE_VIEWS, *derived]:
        quoted = '"' + name.replace('"', '""') + '"'
        has_blocks = name in CHAIN_VIEWS or name == "alerts"
        if name in contracts:
            columns = [{"name": c.name, "type": c.type, "description": c.description}
                       for c in contracts[name].columns]
        else:
            shape = engine.run(f"select * from {quoted} limit 0")  # noqa: S608 - a view name, quoted
            columns = [{"name": f.name, "type": str(f.type), "description": ""} for f in shape.table.schema]
        span = ", min(block_number) as lo, max(block_number) as hi" if has_blocks else ""
        stats = engine.run(f"select count(*) as n{span} from {quoted}",  # noqa: S608 - a quoted view name
                           limits=Limits(rows=1, timeout_s=60)).table.to_pylist()[0]
        high = stats.get("hi")
        description = (contracts[name].description if name in contracts else STATE_DESCRIPTIONS.get(name)
                       or (registered.get(name) or {}).get("description") or f"Derived dataset {name}.")
        found.append({
            "pointer_set": seq,
            "name": name, "kind": _kind(name),
            "description": " ".join(description.split()), "columns": columns,
            "current_version": pointers.get(name), "rows": stats["n"],
            "block_range": None if high is None else [stats["lo"], high],
            "cold_watermark": watermarks.get(name),
            "chain_head": head if name in CHAIN_VIEWS else None,
            "blocks_behind_head": head - high if name in CHAIN_VIEWS and head is not None and high is not None
            else None,
        })
    return found


def _kind(name: str) -> str:
    return "chain" if name in CHAIN_VIEWS else "state" if name in STATE_VIEWS else "derived"


def search(entries: Sequence[dict[str, Any]], word: str) -> list[dict[str, Any]]:
    """The entries whose name, description or a column's name or description holds ``word``
    (case-insensitive), the name matches first."""
    needle = word.lower().strip()
    if not needle:
        return list(entries)

    def rank(entry: dict[str, Any]) -> int | None:
        if needle in entry["name"].lower():
            return 0
        if needle in entry["description"].lower():
            return 1
        if any(needle in c["name"].lower() or needle in c["description"].lower() for c in entry["columns"]):
            return 2
        return None

    ranked = [(r, e) for e in entries if (r := rank(e)) is not None]
    return [e for _, e in sorted(ranked, key=lambda pair: (pair[0], pair[1]["name"]))]
