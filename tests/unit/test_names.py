"""Every wire name in tracekit.names is a contract in schemas/avro, and every contract's record
has its name there: a renamed record cannot leave a stale name behind."""

from __future__ import annotations

import json
from pathlib import Path

from tracekit import names

CONTRACTS = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def _top_level_records() -> set[str]:
    found = set()
    for path in CONTRACTS.glob("*.avsc"):
        schema = json.loads(path.read_text())
        found.add(f"{schema['namespace']}.{schema['name']}")
    return found


def test_schema_names_are_the_contracts() -> None:
    assert set(names.SCHEMAS) == _top_level_records()


def test_topic_names() -> None:
    assert names.blocks_topic(10143) == "trace.chain.10143.blocks"
    assert names.transfers_topic(1) == "trace.chain.1.transfers"
    assert names.stake_changes_topic(1) == "trace.chain.1.stake_changes"
    assert names.dead_letter_topic(names.blocks_topic(7)) == "trace.chain.7.blocks.dlq"
    assert names.ALERTS_TOPIC == "trace.alerts"
