"""Enrichment: decoded events + labels + prices + token decimals -> enriched events (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from streams.enrich.labels import LabelCache
from streams.enrich.model import ChainEvent
from streams.enrich.prices import PriceBook


def enrich(
    events: Iterable[ChainEvent],
    labels: LabelCache,
    prices: PriceBook,
    decimals: Mapping[str, int],
) -> list[ChainEvent]:
    """Fill ``from_labels``/``to_labels``, ``decimals`` (by lower-case token address) and
    ``usd_value`` (None when the token's decimals or price at the block time are unknown)."""
    by_token = {token.lower(): d for token, d in decimals.items()}
    out = []
    for event in events:
        token_decimals = by_token.get(event.token.lower())
        usd = None if token_decimals is None else prices.usd_value(event, token_decimals)
        out.append(
            dataclasses.replace(
                event,
                from_labels=labels.labels_of(event.from_address),
                to_labels=labels.labels_of(event.to_address),
                decimals=token_decimals,
                usd_value=usd,
            )
        )
    return out
