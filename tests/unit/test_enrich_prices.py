"""PriceBook lookups (against a brute-force reference), usd_value, and enrich()."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.enrich.enrich import enrich
from streams.enrich.labels import LabelCache
from streams.enrich.model import ChainEvent
from streams.enrich.prices import PriceBook

TOKEN = "0x" + "aa" * 20
OTHER = "0x" + "cc" * 20
ALICE = "0x" + "11" * 20
BOB = "0x" + "22" * 20


def transfer(amount: int, timestamp: int, token: str = TOKEN) -> ChainEvent:
    return ChainEvent(
        event_type="transfer", key=f"1:transfer:1:{amount}", chain_id=1, block_number=1,
        block_hash="0x" + "ef" * 32, timestamp=timestamp, log_index=0, transaction_hash="0x" + "cd" * 32,
        token=token, from_address=ALICE, to_address=BOB, amount=amount, action="transfer",
    )


def test_latest_price_at_or_before() -> None:
    book = PriceBook.from_mapping({TOKEN: [(100, Decimal("2")), (200, Decimal("3")), (50, Decimal("1"))]})
    assert book.usd_at(TOKEN, 49) is None
    assert book.usd_at(TOKEN, 50) == Decimal("1")
    assert book.usd_at(TOKEN, 199) == Decimal("2")
    assert book.usd_at(TOKEN, 200) == Decimal("3")
    assert book.usd_at(TOKEN.upper().replace("0X", "0x"), 10**12) == Decimal("3")
    assert book.usd_at(OTHER, 200) is None


def test_usd_value_is_exact_for_uint256_amounts() -> None:
    book = PriceBook.from_mapping({TOKEN: [(0, Decimal("1.25"))]})
    assert book.usd_value(transfer(3 * 10**18, 10), 18) == Decimal("3.75")
    huge = 2**256 - 1
    exact = Decimal(f"{huge * 125 // 100}.{huge * 125 % 100:02d}")  # no rounding to 28 digits
    assert book.usd_value(transfer(huge, 10), 0) == exact
    assert book.usd_value(transfer(1, 10, token=OTHER), 18) is None


def test_replace_swaps_points() -> None:
    book = PriceBook.from_mapping({TOKEN: [(0, Decimal(1))]})
    book.replace([(OTHER, 5, Decimal(2))])
    assert book.usd_at(TOKEN, 10) is None
    assert book.usd_at(OTHER, 10) == Decimal(2)
    assert book.tokens == frozenset({OTHER})


points = st.lists(
    st.tuples(st.sampled_from([TOKEN, OTHER]), st.integers(0, 1000),
              st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(points, st.sampled_from([TOKEN, OTHER]), st.integers(-5, 1005))
def test_usd_at_matches_brute_force(pts: list[tuple[str, int, Decimal]], token: str, t: int) -> None:
    book = PriceBook(pts)
    latest: dict[int, Decimal] = {}
    for tok, ts, usd in pts:  # later points at the same ts replace earlier ones
        if tok == token:
            latest[ts] = usd
    eligible = [ts for ts in latest if ts <= t]
    want = latest[max(eligible)] if eligible else None
    assert book.usd_at(token, t) == want


def test_enrich_fills_labels_decimals_and_usd() -> None:
    labels = LabelCache.fixed({ALICE: ["exchange", "hot wallet"], BOB.upper().replace("0X", "0x"): ["whale"]})
    prices = PriceBook.from_mapping({TOKEN: [(0, Decimal("2"))]})
    events = [transfer(5 * 10**17, 10), transfer(7, 10, token=OTHER)]
    out = enrich(events, labels, prices, {TOKEN.upper().replace("0X", "0x"): 18})
    assert out[0].from_labels == frozenset({"exchange", "hot wallet"})
    assert out[0].to_labels == frozenset({"whale"})
    assert (out[0].decimals, out[0].usd_value) == (18, Decimal("1.0"))
    assert (out[1].decimals, out[1].usd_value) == (None, None)
    assert out[1].from_labels == frozenset({"exchange", "hot wallet"})
    assert labels.labels_of("0x" + "99" * 20) == frozenset()
    assert events[0].from_labels == frozenset()  # inputs untouched
