"""Wire names: the one place each topic and Avro record name is spelled.

Schema names are the full names of the records in ``schemas/avro/*.avsc`` (a unit test checks
that every name here is a contract there). Topic names are functions of the chain where a topic
is per chain.
"""

from __future__ import annotations

# -- Avro records (schemas/avro) -----------------------------------------------------------------
BLOCK = "trace.chain.Block"
REORG = "trace.chain.Reorg"
TRANSACTION = "trace.chain.Transaction"
LOG = "trace.chain.Log"
TRANSFER = "trace.enrich.Transfer"
STAKE_CHANGE = "trace.enrich.StakeChange"
BLOCK_END = "trace.enrich.BlockEnd"
ALERT = "trace.alerts.Alert"
PRICE = "trace.prices.Price"

SCHEMAS = (BLOCK, REORG, TRANSACTION, LOG, TRANSFER, STAKE_CHANGE, BLOCK_END, ALERT, PRICE)

# -- topics ----------------------------------------------------------------------------------------
ALERTS_TOPIC = "trace.alerts"  # alerts and retractions of every rule (the default of TRACE_ALERTS_TOPIC)
PRICES_TOPIC = "trace.prices"  # off-chain USD prices


def blocks_topic(chain_id: int) -> str:
    """The topic carrying one chain's block and reorg events, in chain order."""
    return f"trace.chain.{chain_id}.blocks"


def transfers_topic(chain_id: int) -> str:
    """One chain's enriched token transfers (``trace.enrich.Transfer``), each block's closed by a
    ``trace.enrich.BlockEnd``, and the chain's ``trace.chain.Reorg`` events, in chain order."""
    return f"trace.chain.{chain_id}.transfers"


def stake_changes_topic(chain_id: int) -> str:
    """One chain's enriched stake changes (``trace.enrich.StakeChange``), each block's closed by a
    ``trace.enrich.BlockEnd``, and the chain's ``trace.chain.Reorg`` events, in chain order."""
    return f"trace.chain.{chain_id}.stake_changes"


def dead_letter_topic(topic: str) -> str:
    """Where messages of ``topic`` that cannot be processed go, byte for byte."""
    return f"{topic}.dlq"
