"""Moved: the SQL gate is the kernel's :mod:`tracekit.sqlgate` (docs/sql-gate.md).

Only re-exported here for importers not yet moved to it (``dispatcher/query/engine.py``); import
``tracekit.sqlgate`` instead. Delete this module once nothing imports it. No logic of its own.
"""

from tracekit.sqlgate import GatedSql, SqlRefused, check_sql

__all__ = ["GatedSql", "SqlRefused", "check_sql"]
