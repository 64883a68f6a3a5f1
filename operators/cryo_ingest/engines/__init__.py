"""The two extractors of :mod:`operators.cryo_ingest`: ``rpc`` (native JSON-RPC) and ``cryo``."""
