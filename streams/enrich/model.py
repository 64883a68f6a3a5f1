"""The enriched chain events that alert rules are evaluated on (pure data, no I/O).

Built by the enrichment stage from a block event (decoded logs + labels + prices), and from
reorg events and follower lag readings. Every event has a deterministic ``key``: the alert id of
a rule firing on it derives from that key, so redelivery never makes a second alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

TRANSFER = "transfer"
STAKE_CHANGE = "stake_change"
REORG = "reorg"
LAG = "lag"


@dataclass(frozen=True, slots=True)
class ChainEvent:
    """One decoded, enriched event of a canonical block.

    For a ``transfer`` (ERC-20 ``Transfer``; mints come from, burns go to, the zero address):
    ``token`` is the token contract, ``from_address``/``to_address`` the parties, ``amount`` the
    raw uint256 value, ``action`` one of ``transfer``, ``mint``, ``burn``.
    For a ``stake_change``: ``token`` is the staking contract, ``from_address`` the delegator,
    ``to_address`` the validator, ``action`` ``delegate`` or ``undelegate``.
    """

    event_type: str
    key: str  # "{chain}:{event_type}:{block_number}:{block_hash}:{log_index}"
    chain_id: int
    block_number: int
    block_hash: str
    timestamp: int
    log_index: int
    transaction_hash: str
    token: str
    from_address: str
    to_address: str
    amount: int
    action: str
    decimals: int | None = None
    usd_value: Decimal | None = None
    from_labels: frozenset[str] = field(default_factory=frozenset)
    to_labels: frozenset[str] = field(default_factory=frozenset)
    observed_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class ReorgEvent:
    """A reorg as rules see it: its depth and the orphaned block hashes."""

    key: str  # the Reorg event's idempotency key
    chain_id: int
    common_ancestor_number: int
    depth: int
    orphaned_hashes: tuple[str, ...]
    detected_at_ms: int


@dataclass(frozen=True, slots=True)
class LagReading:
    """The follower's lag at one moment (rules of kind ``lag``)."""

    key: str  # "{chain}:lag:{head_number}"
    chain_id: int
    head_number: int
    lag_blocks: int
    lag_seconds: float
