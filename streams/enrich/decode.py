"""Pure decoding: a ``trace.chain.Block`` event record -> :class:`ChainEvent` s (no I/O).

* Every ERC-20 ``Transfer(address,address,uint256)`` log, from ANY contract, becomes a
  ``transfer`` event (``mint`` from the zero address, ``burn`` to it, else ``transfer``).
* ``Delegated``/``Undelegated(address,address,uint256)`` logs of the given staking contracts become
  ``stake_change`` events (``delegate``/``undelegate``; from = delegator, to = validator).

Anyone can emit a log with these signatures (an ERC-721 ``Transfer`` has the same topic0 but 4
topics and no data), so a log of the wrong shape is skipped and counted in :class:`DecodeStats`,
never raised.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.enrich.model import STAKE_CHANGE, TRANSFER, ChainEvent

# keccak256 of the event signatures (equal to operators/devchain/artifacts/*.json "eventTopics";
# a unit test checks that)
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
DELEGATED_TOPIC = "0xe5541a6b6103d4fa7e021ed54fad39c66f27a76bd13d374cf6240ae6bd0bb72b"
UNDELEGATED_TOPIC = "0x4d10bd049775c77bd7f255195afba5088028ecb3c7c277d393ccff7934f2f92c"
ZERO_ADDRESS = "0x" + "00" * 20

_STAKE_ACTIONS = {DELEGATED_TOPIC: "delegate", UNDELEGATED_TOPIC: "undelegate"}
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass
class DecodeStats:
    """What :func:`decode_block` did with the logs it saw; pass one in to accumulate over blocks."""

    logs: int = 0
    transfers: int = 0
    stake_changes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count (malformed logs)

    @property
    def malformed(self) -> int:
        return sum(self.skipped.values())


def event_key(chain_id: int, event_type: str, block_number: int, block_hash: str, log_index: int) -> str:
    """Deterministic key of one decoded log. The block hash is part of it: the event at the same
    height and log index on a replacement block is another event (and gets its own alert)."""
    return f"{chain_id}:{event_type}:{block_number}:{block_hash}:{log_index}"


def _word(value: object) -> str | None:
    """The 64 lower-case hex digits of a 32-byte 0x-hex word, else None."""
    if not isinstance(value, str) or len(value) != 66 or not value.startswith("0x"):
        return None
    digits = value[2:]
    return digits.lower() if _HEX.issuperset(digits) else None


def _address_topic(value: object) -> str | None:
    """The address in an indexed ``address`` topic (12 zero bytes, then 20), else None."""
    word = _word(value)
    if word is None or word[:24] != "0" * 24:
        return None
    return "0x" + word[24:]


def _parse(log: Mapping[str, Any]) -> tuple[str, str, int] | str:
    """(first address, second address, amount) of a 3-topic, 32-byte-data event; else a reason."""
    topics = [log.get(f"topic{i}") for i in range(4)]
    count = sum(t is not None for t in topics)
    if count != 3 or topics[3] is not None:
        return f"{count} topics"
    first, second = _address_topic(topics[1]), _address_topic(topics[2])
    if first is None or second is None:
        return "bad address topic"
    word = _word(log.get("data"))
    if word is None:
        return "data is not 32 bytes"
    return first, second, int(word, 16)


def decode_block(
    block: Mapping[str, Any],
    *,
    staking_contracts: frozenset[str] = frozenset(),
    stats: DecodeStats | None = None,
) -> list[ChainEvent]:
    """The transfer and stake-change events of one decoded Block record, in log order.

    ``staking_contracts`` are lower-case addresses. Malformed candidate logs are skipped and
    counted in ``stats`` (if given); logs of other events are ignored.
    """
    stats = stats if stats is not None else DecodeStats()
    staking = frozenset(a.lower() for a in staking_contracts)
    chain_id = int(block["chain_id"])
    block_number = int(block["block_number"])
    block_hash = str(block["block_hash"])
    timestamp = int(block["timestamp"])
    observed_at_ms = int(block.get("observed_at_ms") or 0)
    events: list[ChainEvent] = []
    for log in block.get("logs") or ():
        stats.logs += 1
        topic0 = log.get("topic0")
        topic0 = topic0.lower() if isinstance(topic0, str) else None
        emitter = str(log.get("address", "")).lower()
        if topic0 == TRANSFER_TOPIC:
            event_type = TRANSFER
        elif topic0 in _STAKE_ACTIONS and emitter in staking:
            event_type = STAKE_CHANGE
        else:
            continue
        parsed = _parse(log)
        if isinstance(parsed, str):
            stats.skipped[f"{event_type}: {parsed}"] += 1
            continue
        src, dst, amount = parsed
        if event_type == TRANSFER:
            action = "mint" if src == ZERO_ADDRESS else "burn" if dst == ZERO_ADDRESS else "transfer"
            stats.transfers += 1
        else:
            action = _STAKE_ACTIONS[topic0]
            stats.stake_changes += 1
        log_index = int(log["log_index"])
        events.append(
            ChainEvent(
                event_type=event_type,
                key=event_key(chain_id, event_type, block_number, block_hash, log_index),
                chain_id=chain_id,
                block_number=block_number,
                block_hash=block_hash,
                timestamp=timestamp,
                log_index=log_index,
                transaction_hash=str(log.get("transaction_hash", "")),
                token=emitter,
                from_address=src,
                to_address=dst,
                amount=amount,
                action=action,
                observed_at_ms=observed_at_ms,
            )
        )
    return events
