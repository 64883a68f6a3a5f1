"""What an enriching agent reads for every event, opened once: the label cache and the price book.

The enrich worker and the alert evaluator both enrich a block's events with address labels (seen
within seconds of a change, :class:`~streams.enrich.labels.LabelCache`) and USD values (a
:class:`~streams.enrich.prices.PriceBook` reloaded every ``PRICE_REFRESH_S`` by a task).
:meth:`Lookups.open` starts all three; each agent keeps the result in its own resources.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from streams.enrich.labels import LabelCache
from streams.enrich.prices import PriceBook

PRICE_REFRESH_S = 10.0


@dataclass(frozen=True, slots=True)
class Lookups:
    """The label cache, the price book and the task that keeps the prices fresh."""

    labels: LabelCache
    prices: PriceBook
    prices_task: asyncio.Task[None]

    @classmethod
    async def open(cls, database_url: str, *, refresh_every: float = PRICE_REFRESH_S) -> Lookups:
        """Start the label cache and load the prices (raising if Postgres is unreachable)."""
        labels = LabelCache(database_url)
        await labels.start()
        try:
            prices = await PriceBook.load(database_url)
        except BaseException:
            await labels.stop()
            raise
        return cls(labels, prices, asyncio.create_task(prices.refresh_forever(database_url, refresh_every)))
