"""price_feed: a source operator putting token USD prices into ``hot.prices`` and onto ``trace.prices``.

Inputs: a CSV / JSON / JSON-lines file (``trace prices import``) or an HTTP endpoint serving a
JSON list, polled on an interval (``trace prices poll``). See docs/enrichment.md.
"""
