"""The in-memory QueueDriver keeps the port's contract (as the Postgres driver does), so logic
tested against it behaves the same on the real queues: at-least-once, visibility timeout,
poison messages dead-lettered, waiting receivers woken by a publish."""

from __future__ import annotations

import asyncio

from dispatcher.queue import Delivery, QueueDriver
from dispatcher.queue.memory import MemoryQueueDriver


def test_it_is_a_queue_driver() -> None:
    driver: QueueDriver = MemoryQueueDriver()
    assert driver is not None


async def test_publish_receive_ack_delivers_each_message_once() -> None:
    q = MemoryQueueDriver(visibility_s=0.05)
    await q.publish("tasks", [b"a", b"b", b"c"])
    first = await q.receive("tasks", max_messages=2, wait_s=0)
    rest = await q.receive("tasks", max_messages=10, wait_s=0)
    assert [d.body for d in first] == [b"a", b"b"]
    assert [d.body for d in rest] == [b"c"]
    assert {d.receives for d in first + rest} == {1}
    await q.ack(first + rest)
    await asyncio.sleep(0.08)  # past the visibility timeout: acked means gone
    assert await q.receive("tasks", max_messages=10, wait_s=0) == []


async def test_an_unacked_message_comes_back_after_the_visibility_timeout() -> None:
    q = MemoryQueueDriver(visibility_s=0.1)
    await q.publish("tasks", [b"t1"])
    (d,) = await q.receive("tasks", max_messages=1, wait_s=0)
    assert await q.receive("tasks", max_messages=1, wait_s=0.03) == []  # invisible for now
    (again,) = await q.receive("tasks", max_messages=1, wait_s=1.0)  # the wait ends at the timeout
    assert (again.body, again.receives) == (b"t1", 2)
    await q.ack([again])
    await q.ack([d])  # a stale ack of a handled message is harmless


async def test_a_message_nacked_max_receives_times_is_dead_with_its_last_error() -> None:
    q = MemoryQueueDriver(max_receives=3)
    await q.publish("tasks", [b"not-a-task-id", b"ok"])
    seen = []
    for _ in range(3):
        (d,) = [d for d in await q.receive("tasks", max_messages=10, wait_s=0) if d.body == b"not-a-task-id"]
        seen.append(d.receives)
        await q.nack(d, f"bad task id (receive {d.receives})")
    assert seen == [1, 2, 3]
    assert q.dead == {"tasks": [(b"not-a-task-id", "bad task id (receive 3)")]}
    assert await q.receive("tasks", max_messages=10, wait_s=0) == []


async def test_a_message_received_max_times_without_an_ack_is_dead_too() -> None:
    q = MemoryQueueDriver(max_receives=2, visibility_s=0.02)
    await q.publish("tasks", [b"crashy"])
    for n in (1, 2):
        (d,) = await q.receive("tasks", max_messages=1, wait_s=1.0)
        assert d.receives == n  # the worker dies without acking
    assert await q.receive("tasks", max_messages=1, wait_s=0.1) == []
    assert q.dead == {"tasks": [(b"crashy", "received 2 times without an ack")]}


async def test_a_stale_nack_does_not_release_a_message_someone_else_holds() -> None:
    q = MemoryQueueDriver(visibility_s=0.02)
    await q.publish("tasks", [b"t"])
    (old,) = await q.receive("tasks", max_messages=1, wait_s=0)
    (new,) = await q.receive("tasks", max_messages=1, wait_s=1.0)  # old's visibility ran out
    assert new.receives == 2
    await q.nack(old, "late")  # from the first receiver: ignored
    assert await q.receive("tasks", max_messages=1, wait_s=0) == []
    await q.ack([new])


async def test_a_waiting_receiver_wakes_on_publish_not_on_other_queues() -> None:
    q = MemoryQueueDriver()
    loop = asyncio.get_running_loop()
    start = loop.time()
    waiter = asyncio.create_task(q.receive("tasks", max_messages=5, wait_s=5.0))
    await asyncio.sleep(0.02)
    await q.publish("other", [b"x"])  # a wake-up for another queue does not end the wait
    await asyncio.sleep(0.02)
    assert not waiter.done()
    await q.publish("tasks", [b"y"])
    got = await asyncio.wait_for(waiter, 1.0)
    assert [d.body for d in got] == [b"y"]
    assert loop.time() - start < 1.0


async def test_concurrent_receivers_split_the_messages() -> None:
    q = MemoryQueueDriver()
    waiters = [asyncio.create_task(q.receive("tasks", max_messages=1, wait_s=0.5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    await q.publish("tasks", [b"1", b"2"])
    got: list[list[Delivery]] = await asyncio.gather(*waiters)
    bodies = sorted(d.body for batch in got for d in batch)
    assert bodies == [b"1", b"2"]  # each message to one receiver; the third waited out


async def test_receive_waits_at_most_wait_s() -> None:
    q = MemoryQueueDriver()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await q.receive("tasks", max_messages=1, wait_s=0.05) == []
    assert 0.04 <= loop.time() - start < 0.5
