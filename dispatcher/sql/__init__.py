"""The dispatcher's SQL: named queries, one file per concept, read with
:func:`tracekit.db.queries.load_queries` (``load_queries("dispatcher.sql", "tasks.sql")``).

- ``runs.sql``: runs (submission, idempotency, settling, cancel)
- ``tasks.sql``: tasks (creation, claims, leases, completion, the reaper)
- ``events.sql``: events tasks emit, external events
- ``triggers.sql``: the state of stateful triggers
- ``dags.sql``: deployed DAG versions, their jobs, dataset producers
- ``views.sql``: the read-only views of runs and tasks (API, CLI)
- ``queue.sql``: the Postgres wake-up queue
- ``audit.sql``: the API's audit log
"""
