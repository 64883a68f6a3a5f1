"""Trace's shared kernel: configuration, errors, JSON-RPC, Postgres and Avro plumbing, the CLI.

Named ``tracekit`` so it never shadows the standard library's ``trace`` module; the console
script is still called ``trace``.
"""

__version__ = "0.1.0"
