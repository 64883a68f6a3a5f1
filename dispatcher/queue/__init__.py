"""Wake-up queues: the :class:`QueueDriver` port, its Postgres and Kafka adapters and a fake.

A message is a wake-up, never the truth: its body is a task id and nothing else. Losing one
delays a task until a worker's idle poll finds it; delivering one twice is harmless, because a
claim is a fenced update in Postgres.
"""

from dispatcher.queue.driver import Delivery, QueueDriver

__all__ = ["Delivery", "QueueDriver"]
