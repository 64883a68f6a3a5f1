"""decode_block: ERC-20 transfers from any contract, stake changes from the staking contracts,
malformed logs skipped and counted (never raised)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.devchain.artifacts import load_artifact
from streams.enrich.decode import (
    DELEGATED_TOPIC,
    TRANSFER_TOPIC,
    UNDELEGATED_TOPIC,
    ZERO_ADDRESS,
    DecodeStats,
    decode_block,
)

TOKEN = "0x" + "aa" * 20
STAKING = "0x" + "bb" * 20
ALICE = "0x" + "11" * 20
BOB = "0x" + "22" * 20


def topic(address: str) -> str:
    return "0x" + "00" * 12 + address[2:]


def word(value: int) -> str:
    return "0x" + format(value, "064x")


def log(index: int, address: str, *topics: str | None, data: str = "0x") -> dict[str, Any]:
    padded = [*topics, None, None, None, None][:4]
    return {
        "block_number": 7, "transaction_index": 0, "log_index": index,
        "transaction_hash": "0x" + "cd" * 32, "address": address,
        "topic0": padded[0], "topic1": padded[1], "topic2": padded[2], "topic3": padded[3],
        "data": data,
    }


def block(*logs: dict[str, Any]) -> dict[str, Any]:
    return {
        "chain_id": 10143, "block_number": 7, "block_hash": "0x" + "ef" * 32,
        "parent_hash": "0x" + "ee" * 32, "timestamp": 1_700_000_000, "observed_at_ms": 123,
        "transactions": [], "logs": list(logs),
    }


def test_topics_match_the_devchain_artifacts() -> None:
    assert load_artifact("TraceToken").topic("Transfer(address,address,uint256)") == TRANSFER_TOPIC
    staking = load_artifact("TraceStaking")
    assert staking.topic("Delegated(address,address,uint256)") == DELEGATED_TOPIC
    assert staking.topic("Undelegated(address,address,uint256)") == UNDELEGATED_TOPIC


def test_transfer_mint_burn_and_stake_changes() -> None:
    b = block(
        log(0, TOKEN, TRANSFER_TOPIC, topic(ALICE), topic(BOB), data=word(5)),
        log(1, TOKEN, TRANSFER_TOPIC, topic(ZERO_ADDRESS), topic(BOB), data=word(6)),
        log(2, TOKEN.upper().replace("0X", "0x"), TRANSFER_TOPIC, topic(ALICE), topic(ZERO_ADDRESS),
            data=word(7)),
        log(3, STAKING, DELEGATED_TOPIC, topic(ALICE), topic(BOB), data=word(8)),
        log(4, STAKING, UNDELEGATED_TOPIC, topic(ALICE), topic(BOB), data=word(9)),
        log(5, TOKEN, DELEGATED_TOPIC, topic(ALICE), topic(BOB), data=word(10)),  # not staking
        log(6, TOKEN, "0x" + "12" * 32, topic(ALICE), topic(BOB), data=word(11)),  # other event
    )
    stats = DecodeStats()
    events = decode_block(b, staking_contracts=frozenset({STAKING}), stats=stats)
    assert [(e.event_type, e.action, e.amount, e.log_index) for e in events] == [
        ("transfer", "transfer", 5, 0), ("transfer", "mint", 6, 1), ("transfer", "burn", 7, 2),
        ("stake_change", "delegate", 8, 3), ("stake_change", "undelegate", 9, 4),
    ]
    first = events[0]
    block_hash = "0x" + "ef" * 32
    assert first.key == f"10143:transfer:7:{block_hash}:0"
    assert events[3].key == f"10143:stake_change:7:{block_hash}:3"
    assert (first.token, first.from_address, first.to_address) == (TOKEN, ALICE, BOB)
    assert (first.block_hash, first.timestamp, first.observed_at_ms) == (b["block_hash"], 1_700_000_000, 123)
    assert events[2].token == TOKEN
    assert (events[3].from_address, events[3].to_address, events[3].token) == (ALICE, BOB, STAKING)
    assert (stats.logs, stats.transfers, stats.stake_changes, stats.malformed) == (7, 3, 2, 0)


def test_without_staking_contracts_no_stake_changes() -> None:
    b = block(log(0, STAKING, DELEGATED_TOPIC, topic(ALICE), topic(BOB), data=word(8)))
    assert decode_block(b) == []


def test_malformed_logs_are_skipped_and_counted() -> None:
    b = block(
        # ERC-721 Transfer: 4 topics, no data
        log(0, TOKEN, TRANSFER_TOPIC, topic(ALICE), topic(BOB), word(42)),
        log(1, TOKEN, TRANSFER_TOPIC, topic(ALICE), data=word(1)),  # 2 topics
        log(2, TOKEN, TRANSFER_TOPIC, topic(ALICE), topic(BOB), data="0x" + "00" * 31),  # short
        log(3, TOKEN, TRANSFER_TOPIC, topic(ALICE), topic(BOB), data=word(1) + "00"),  # long
        log(4, TOKEN, TRANSFER_TOPIC, "0x" + "ff" * 32, topic(BOB), data=word(1)),  # not an address
        log(5, TOKEN, TRANSFER_TOPIC, topic(ALICE), topic(BOB), data="0x" + "zz" * 32),  # not hex
        log(6, STAKING, DELEGATED_TOPIC, topic(ALICE), data=word(1)),
        log(7, TOKEN, TRANSFER_TOPIC, topic(ALICE), topic(BOB), data=word(3)),  # the good one
    )
    stats = DecodeStats()
    events = decode_block(b, staking_contracts=frozenset({STAKING}), stats=stats)
    assert [e.log_index for e in events] == [7]
    assert stats.malformed == 7
    assert stats.skipped["transfer: 4 topics"] == 1
    assert stats.skipped["transfer: 2 topics"] == 1
    assert stats.skipped["transfer: data is not 32 bytes"] == 3
    assert stats.skipped["transfer: bad address topic"] == 1
    assert stats.skipped["stake_change: 2 topics"] == 1


def test_stats_accumulate_across_blocks() -> None:
    stats = DecodeStats()
    good = log(0, TOKEN, TRANSFER_TOPIC, topic(ALICE), topic(BOB), data=word(1))
    decode_block(block(good), stats=stats)
    decode_block(block(good), stats=stats)
    assert (stats.logs, stats.transfers) == (2, 2)


hex_word = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
address_word = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + "00" * 12 + b.hex())
any_topic = st.one_of(st.none(), hex_word, address_word, st.text(max_size=70))
topic0s = st.sampled_from([TRANSFER_TOPIC, DELEGATED_TOPIC, UNDELEGATED_TOPIC, None, "0x" + "00" * 32])
datas = st.one_of(
    st.binary(max_size=40).map(lambda b: "0x" + b.hex()), hex_word, st.text(max_size=70)
)
emitters = st.sampled_from([TOKEN, STAKING, ALICE])


@st.composite
def random_logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 12))
    return [
        log(i, draw(emitters), draw(topic0s), draw(any_topic), draw(any_topic), draw(any_topic),
            data=draw(datas))
        for i in range(count)
    ]


def expected(entry: dict[str, Any]) -> tuple[str, str, str, str, int] | None:
    """A brute-force reference decoder, written independently of decode.py's helpers."""
    t0 = entry["topic0"]
    if t0 == TRANSFER_TOPIC:
        kind = "transfer"
    elif t0 in (DELEGATED_TOPIC, UNDELEGATED_TOPIC) and entry["address"] == STAKING:
        kind = "stake_change"
    else:
        return None
    t1, t2, t3, data = entry["topic1"], entry["topic2"], entry["topic3"], entry["data"]
    try:
        if t3 is not None or t1 is None or t2 is None:
            return None
        a, b = bytes.fromhex(t1[2:]), bytes.fromhex(t2[2:])
        value = bytes.fromhex(data[2:])
    except ValueError:
        return None
    if not (t1.startswith("0x") and t2.startswith("0x") and data.startswith("0x")):
        return None
    if len(a) != 32 or len(b) != 32 or len(value) != 32 or any(a[:12]) or any(b[:12]):
        return None
    src, dst = "0x" + a[12:].hex(), "0x" + b[12:].hex()
    if kind == "transfer":
        action = "mint" if src == ZERO_ADDRESS else "burn" if dst == ZERO_ADDRESS else "transfer"
    else:
        action = "delegate" if t0 == DELEGATED_TOPIC else "undelegate"
    return kind, action, src, dst, int.from_bytes(value, "big")


@settings(max_examples=300, deadline=None)
@given(random_logs())
def test_random_logs_never_raise_and_match_a_reference(logs: list[dict[str, Any]]) -> None:
    stats = DecodeStats()
    events = decode_block(block(*logs), staking_contracts=frozenset({STAKING}), stats=stats)
    want = [(i, e) for i, entry in enumerate(logs) if (e := expected(entry)) is not None]
    got = [(e.log_index, (e.event_type, e.action, e.from_address, e.to_address, e.amount)) for e in events]
    assert got == want
    assert len({e.key for e in events}) == len(events)
    candidates = sum(
        1 for entry in logs
        if entry["topic0"] == TRANSFER_TOPIC
        or (entry["topic0"] in (DELEGATED_TOPIC, UNDELEGATED_TOPIC) and entry["address"] == STAKING)
    )
    assert stats.transfers + stats.stake_changes + stats.malformed == candidates
    assert stats.logs == len(logs)
