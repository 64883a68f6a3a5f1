"""USD prices per token: :class:`PriceBook` answers "the latest price at or before t" from memory.

Lookups are pure (bisect over each token's sorted points). The book is loaded from
``hot.prices`` (filled by ``operators/price_feed``) and can refresh itself periodically; a
refresh builds a new index and swaps it in atomically.
"""

from __future__ import annotations

import asyncio
import bisect
import decimal
import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal

import psycopg

from streams.enrich.model import ChainEvent
from tracekit.errors import RetryableError

log = logging.getLogger(__name__)

_PRECISION = 120  # uint256 has 78 digits: keep amount * price exact


def _index(points: Iterable[tuple[str, int, Decimal]]) -> dict[str, tuple[list[int], list[Decimal]]]:
    by_token: dict[str, dict[int, Decimal]] = {}
    for token, ts, usd in points:
        by_token.setdefault(token.lower(), {})[int(ts)] = Decimal(usd)
    index: dict[str, tuple[list[int], list[Decimal]]] = {}
    for token, series in by_token.items():
        stamps = sorted(series)
        index[token] = (stamps, [series[t] for t in stamps])
    return index


class PriceBook:
    """``usd_at(token, t)``: the latest USD price of ``token`` at or before unix second ``t``."""

    def __init__(self, points: Iterable[tuple[str, int, Decimal]] = ()) -> None:
        self._index = _index(points)

    @classmethod
    def from_mapping(cls, prices: Mapping[str, Iterable[tuple[int, Decimal]]]) -> PriceBook:
        return cls((token, ts, usd) for token, series in prices.items() for ts, usd in series)

    def replace(self, points: Iterable[tuple[str, int, Decimal]]) -> None:
        """Swap in a new set of points (atomic for readers)."""
        self._index = _index(points)

    @property
    def tokens(self) -> frozenset[str]:
        return frozenset(self._index)

    def usd_at(self, token: str, timestamp: int) -> Decimal | None:
        """Latest price at or before ``timestamp``; None if the token has no price by then."""
        series = self._index.get(token.lower())
        if series is None:
            return None
        stamps, prices = series
        i = bisect.bisect_right(stamps, timestamp)
        return prices[i - 1] if i else None

    def usd_value(self, event: ChainEvent, decimals: int) -> Decimal | None:
        """``amount / 10**decimals * price`` of ``event.token`` at the event's block time."""
        price = self.usd_at(event.token, event.timestamp)
        if price is None:
            return None
        with decimal.localcontext(prec=_PRECISION):
            return Decimal(event.amount).scaleb(-decimals) * price

    # -- Postgres -------------------------------------------------------------------------------

    async def reload(self, database_url: str) -> None:
        """Replace the points with every row of ``hot.prices``."""
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                cur = await conn.execute("SELECT token, ts, usd FROM hot.prices")
                rows = await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise RetryableError(f"cannot load prices: {str(exc).strip().splitlines()[0]}") from exc
        self.replace((str(t), int(ts), Decimal(usd)) for t, ts, usd in rows)

    async def refresh_forever(self, database_url: str, interval: float = 30.0) -> None:
        """Reload every ``interval`` seconds (run as a task; failures are logged and retried)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload(database_url)
            except RetryableError as exc:
                log.warning("price book: %s", exc)

    @classmethod
    async def load(cls, database_url: str) -> PriceBook:
        book = cls()
        await book.reload(database_url)
        return book
