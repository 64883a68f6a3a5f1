"""What every reorg-correct hot-table sink shares (``streams/hot_sink``, ``streams/transfer_sink``).

``plan.py`` (pure): a batch of records and reorgs -> runs of rows between reorg barriers.
``writer.py`` (Postgres): a run COPYed into staging and applied idempotently, a reorg deleted by
hash, all in one transaction. ``agent.py`` (Faust): the batch loop around them, with dead letters
and a database outage waited out. A sink names its tables and how a record becomes their rows
(:class:`~streams.hot_tables.plan.TableSet`); the rest is this package.
"""
