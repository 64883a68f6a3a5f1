"""``alert_route``: deliver ``trace.alerts`` records to webhooks and e-mail, at least once.

Postgres is the truth: the intake consumer turns alert records into ``state.alert_deliveries``
rows (deterministic ``delivery_id``, ``ON CONFLICT DO NOTHING``) before it commits its Kafka
offsets; sender workers claim due rows (``FOR UPDATE SKIP LOCKED``), record the attempt's start,
call out, then record the outcome and the next state. See ``docs/alert-delivery.md``.
"""
