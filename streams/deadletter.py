"""Dead-letter handling shared by the Faust agents.

A message an agent cannot use is copied, byte for byte, to ``<topic>.dlq`` with headers naming
the reason and where it came from, counted, and skipped: it never stops the consumer.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

log = logging.getLogger("trace.deadletter")

DEAD_LETTERS = Counter(
    "trace_dead_letters_total", "Messages sent to a dead-letter topic", ["topic", "stage"]
)


async def send_to_dead_letter(dlq_topic: Any, message: Any, stage: str, reason: str) -> None:
    """Publish ``message`` (a Faust ``Message``) to ``dlq_topic`` with the reason in headers."""
    headers = {
        "trace-dlq-reason": reason[:1000].encode(),
        "trace-dlq-stage": stage.encode(),
        "trace-dlq-source": f"{message.topic}/{message.partition}/{message.offset}".encode(),
    }
    await dlq_topic.send(key=message.key, value=message.value, headers=headers)
    DEAD_LETTERS.labels(message.topic, stage).inc()
    log.warning("dead-lettered %s/%s/%s (%s): %s", message.topic, message.partition, message.offset,
                stage, reason)
