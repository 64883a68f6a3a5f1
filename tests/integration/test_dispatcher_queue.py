"""The wake-up queues on the real stack: the Postgres driver (visibility, poison messages, fencing,
concurrent receivers, NOTIFY), the Kafka driver on tansu, and the outbox -> queue publisher.

The Postgres tests run in a database of their own (created and migrated here), so the outbox and
the queue tables hold only what these tests wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.publisher import queue_publisher
from dispatcher.queue import Delivery, QueueDriver
from dispatcher.queue.kafka import ERROR, RECEIVES, KafkaQueueDriver
from dispatcher.queue.pg import PgQueueDriver
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore
from tracekit.db import migrate
from tracekit.errors import RetryableError
from tracekit.outbox import enqueue

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def queue_db(pg_url: str) -> Iterator[str]:
    """A fresh, migrated database: no other test's outbox rows or queue messages."""
    name = f"queue_it_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(pg_url, dbname=name)
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def pool(queue_db: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(queue_db, min_size=1, max_size=10, open=False) as p:
        yield p


@contextlib.asynccontextmanager
async def _pg_driver(pool: AsyncConnectionPool[Any], url: str, **kw: Any) -> AsyncIterator[PgQueueDriver]:
    driver = PgQueueDriver(pool, url, **kw)
    try:
        yield driver
    finally:
        await driver.close()


def _queue() -> str:
    return f"q{uuid.uuid4().hex[:12]}"


async def _all(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await (await conn.execute(query, args)).fetchall()


async def _bodies(url: str, queue: str) -> list[bytes]:
    rows = await _all(url, "SELECT body FROM state.queue_messages WHERE queue = %s ORDER BY id", queue)
    return [bytes(r[0]) for r in rows]


async def _eventually(check: Any, *, timeout: float = 10.0, every: float = 0.05) -> None:
    """Wait until ``await check()`` is truthy (fails the test after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not reached within {timeout}s: {check.__name__}")
        await asyncio.sleep(every)


# -- PgQueueDriver --------------------------------------------------------------------------------


async def test_pg_publish_receive_ack_round_trip(pool: AsyncConnectionPool[Any], queue_db: str) -> None:
    q = _queue()
    async with _pg_driver(pool, queue_db) as driver:
        await driver.publish(q, [b"a", b"b", b"c"])
        await driver.publish(_queue(), [b"elsewhere"])  # another queue is not mixed in
        first = await driver.receive(q, max_messages=2, wait_s=0)
        rest = await driver.receive(q, max_messages=10, wait_s=0)
        assert [(d.queue, d.body, d.receives) for d in first + rest] == [
            (q, b"a", 1), (q, b"b", 1), (q, b"c", 1)]
        assert await driver.receive(q, max_messages=10, wait_s=0) == []  # all in flight
        await driver.ack(first + rest)
    assert await _bodies(queue_db, q) == []
    assert await _all(queue_db, "SELECT id FROM state.queue_dead WHERE queue = %s", q) == []


async def test_pg_unacked_message_is_visible_again_after_its_visibility_timeout(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    q = _queue()
    async with _pg_driver(pool, queue_db, visibility_s=0.3) as driver:
        await driver.publish(q, [b"t1"])
        (d1,) = await driver.receive(q, max_messages=1, wait_s=0)
        assert await driver.receive(q, max_messages=1, wait_s=0) == []  # invisible for now
        await asyncio.sleep(0.35)
        (d2,) = await driver.receive(q, max_messages=1, wait_s=0)
        assert (d2.body, d2.receives, d2.receipt) == (b"t1", 2, d1.receipt)
        await driver.ack([d2])
        await asyncio.sleep(0.35)
        assert await driver.receive(q, max_messages=1, wait_s=0) == []  # acked means gone
    assert await _bodies(queue_db, q) == []


async def test_pg_nacked_poison_message_is_dead_with_its_last_error_and_not_delivered_again(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    q = _queue()
    seen = []
    async with _pg_driver(pool, queue_db, max_receives=3) as driver:
        await driver.publish(q, [b"poison", b"fine"])
        for _ in range(3):
            got = await driver.receive(q, max_messages=10, wait_s=0)
            await driver.ack([d for d in got if d.body == b"fine"])
            (d,) = [d for d in got if d.body == b"poison"]
            seen.append(d.receives)
            await driver.nack(d, f"bad task id (receive {d.receives})")
        assert seen == [1, 2, 3]
        assert await driver.receive(q, max_messages=10, wait_s=0.2) == []
    dead = await _all(queue_db, "SELECT body, receives, last_error FROM state.queue_dead WHERE queue = %s", q)
    assert [(bytes(b), n, e) for b, n, e in dead] == [(b"poison", 3, "bad task id (receive 3)")]
    assert await _bodies(queue_db, q) == []


async def test_pg_message_received_max_times_without_an_ack_is_dead(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    q = _queue()
    async with _pg_driver(pool, queue_db, max_receives=2, visibility_s=0.2) as driver:
        await driver.publish(q, [b"crashy", b"flaky"])
        first = await driver.receive(q, max_messages=10, wait_s=0)
        assert [(d.body, d.receives) for d in first] == [(b"crashy", 1), (b"flaky", 1)]
        await driver.nack(first[1], "flaky failed once")  # back at once; crashy's worker dies
        (flaky,) = await driver.receive(q, max_messages=10, wait_s=0)
        assert (flaky.body, flaky.receives) == (b"flaky", 2)  # and this worker dies too
        await asyncio.sleep(0.25)
        (crashy,) = await driver.receive(q, max_messages=10, wait_s=0)
        assert (crashy.body, crashy.receives) == (b"crashy", 2)
        await asyncio.sleep(0.25)
        assert await driver.receive(q, max_messages=10, wait_s=0) == []
        await asyncio.sleep(0.25)
        assert await driver.receive(q, max_messages=10, wait_s=0) == []  # never again
    dead = await _all(queue_db, "SELECT body, receives, last_error FROM state.queue_dead"
                                " WHERE queue = %s ORDER BY body", q)
    assert [(bytes(b), n, e) for b, n, e in dead] == [
        (b"crashy", 2, "received 2 times without an ack"), (b"flaky", 2, "flaky failed once")]
    assert await _bodies(queue_db, q) == []


async def test_pg_concurrent_receivers_never_share_a_message(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    q = _queue()
    expected = [f"m{i:04d}".encode() for i in range(400)]
    published = asyncio.Event()
    received: list[list[Delivery]] = [[] for _ in range(4)]

    async def receiver(driver: PgQueueDriver, out: list[Delivery]) -> None:
        while True:
            got = await driver.receive(q, max_messages=7, wait_s=0.1)
            if not got and published.is_set():
                return
            out.extend(got)
            await asyncio.sleep(0)  # hold them while the others receive
            await driver.ack(got)

    async with contextlib.AsyncExitStack() as stack:
        drivers = [await stack.enter_async_context(_pg_driver(pool, queue_db)) for _ in range(5)]
        workers = [asyncio.create_task(receiver(d, out))
                   for d, out in zip(drivers[1:], received, strict=True)]
        for i in range(0, len(expected), 20):
            await drivers[0].publish(q, expected[i:i + 20])
        published.set()
        await asyncio.wait_for(asyncio.gather(*workers), 20)
    everything = [d for out in received for d in out]
    counts = Counter(d.body for d in everything)
    assert sorted(counts) == expected
    assert [b for b, n in counts.items() if n != 1] == []
    assert {d.receives for d in everything} == {1}  # none was ever handed out twice
    assert sum(1 for out in received if out) >= 2  # the receivers really ran side by side
    assert await _bodies(queue_db, q) == []


async def test_pg_waiting_receive_wakes_on_publish(pool: AsyncConnectionPool[Any], queue_db: str) -> None:
    q = _queue()
    # polling every 60 s: only the NOTIFY can end this wait before the 5 s bound below
    async with _pg_driver(pool, queue_db, poll_s=60) as receiver, _pg_driver(pool, queue_db) as sender:
        waiting = asyncio.create_task(receiver.receive(q, max_messages=10, wait_s=30))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await sender.publish(q, [b"wake"])
        got = await asyncio.wait_for(waiting, 5)
        assert [(d.body, d.receives) for d in got] == [(b"wake", 1)]
        await receiver.ack(got)


class _Observed(PgQueueDriver):
    """Tells when a receive has had its first look at the table (and found nothing)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.looked = asyncio.Event()

    async def _receive_now(self, queue: str, n: int) -> list[Delivery]:
        got = await super()._receive_now(queue, n)
        self.looked.set()
        return got


async def test_pg_first_receive_of_a_fresh_driver_hears_an_immediate_publish(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    """A publish landing while a new driver is still opening its LISTEN connection is heard too."""
    for _ in range(3):
        q = _queue()
        receiver = _Observed(pool, queue_db, poll_s=60)
        try:
            async with _pg_driver(pool, queue_db) as sender:
                waiting = asyncio.create_task(receiver.receive(q, max_messages=10, wait_s=30))
                await receiver.looked.wait()
                await sender.publish(q, [b"wake"])
                got = await asyncio.wait_for(waiting, 5)
                assert [d.body for d in got] == [b"wake"]
                await receiver.ack(got)
        finally:
            await receiver.close()


async def test_pg_stale_nack_changes_nothing(pool: AsyncConnectionPool[Any], queue_db: str) -> None:
    q = _queue()
    async with _pg_driver(pool, queue_db, max_receives=2, visibility_s=0.2) as driver:
        await driver.publish(q, [b"t"])
        (old,) = await driver.receive(q, max_messages=1, wait_s=0)
        await asyncio.sleep(0.25)  # its visibility ran out: someone else receives it
        (new,) = await driver.receive(q, max_messages=1, wait_s=0)
        assert new.receives == 2
        before = await _all(queue_db, "SELECT receives, visible_at, last_error FROM state.queue_messages"
                                      " WHERE queue = %s", q)
        await driver.nack(old, "stale worker gives up")
        after = await _all(queue_db, "SELECT receives, visible_at, last_error FROM state.queue_messages"
                                     " WHERE queue = %s", q)
        assert after == before
        assert after[0][2] is None
        assert await driver.receive(q, max_messages=1, wait_s=0) == []  # still held by `new`
        await driver.ack([new])
        await driver.nack(old, "stale after the ack")  # a handled message stays handled
        await driver.nack(new, "late nack after the ack")
    assert await _bodies(queue_db, q) == []
    assert await _all(queue_db, "SELECT id FROM state.queue_dead WHERE queue = %s", q) == []


# -- KafkaQueueDriver on tansu --------------------------------------------------------------------


def _kafka_driver(bootstrap: str, **kw: Any) -> KafkaQueueDriver:
    tag = uuid.uuid4().hex[:10]
    return KafkaQueueDriver(bootstrap, group=f"it-{tag}", prefix=f"it-{tag}.", **kw)


async def _receive_n(driver: QueueDriver, queue: str, n: int, *, timeout: float = 20.0) -> list[Delivery]:
    """Receive until ``n`` messages arrived (the first receive joins the group: seconds on tansu)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[Delivery] = []
    while len(got) < n and loop.time() < deadline:
        got += await driver.receive(queue, max_messages=n - len(got), wait_s=0.5)
    return got


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in offsets if tp.offset >= 0}


def _read_all(bootstrap: str, topic: str, *, settle: float = 1.0) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every message of a one-partition topic (assigned, no group; reads until quiet for ``settle``
    seconds: tansu's reported end offsets cannot be trusted)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[tuple[bytes, dict[str, bytes]]] = []
    quiet = 0.0
    try:
        for _ in range(80):
            msg = consumer.poll(0.25)
            if msg is None or msg.error() is not None:
                quiet += 0.25
                if quiet >= settle and out:
                    break
                continue
            quiet = 0.0
            raw = msg.headers() or []
            headers = raw.items() if isinstance(raw, dict) else raw
            out.append((bytes(msg.value() or b""),
                        {k: v.encode() if isinstance(v, str) else v or b"" for k, v in headers}))
    finally:
        consumer.close()
    return out


async def test_kafka_publish_receive_ack_round_trip(kafka_bootstrap: str) -> None:
    driver = _kafka_driver(kafka_bootstrap, partitions=2)
    try:
        await driver.publish("tasks", [b"k1", b"k2", b"k3"])
        got = await _receive_n(driver, "tasks", 3)
        assert sorted((d.queue, d.body, d.receives) for d in got) == [
            ("tasks", b"k1", 1), ("tasks", b"k2", 1), ("tasks", b"k3", 1)]
        await driver.ack(got)
        expected: dict[int, int] = {}
        for d in got:
            assert isinstance(d.receipt, tuple)
            _topic, partition, offset = d.receipt
            expected[partition] = max(expected.get(partition, 0), offset + 1)
        topic = driver.topic("tasks")
        committed = await asyncio.to_thread(_committed, kafka_bootstrap, driver.group, topic, 2)
        assert committed == expected  # acked: the group's position is past every message
        assert await driver.receive("tasks", max_messages=10, wait_s=0.5) == []
    finally:
        await driver.close()


async def test_kafka_nack_republishes_with_its_receive_count_then_dead_letters(kafka_bootstrap: str) -> None:
    driver = _kafka_driver(kafka_bootstrap, partitions=1, max_receives=3)
    try:
        await driver.publish("tasks", [b"poison"])
        seen = []
        for _ in range(3):
            (d,) = await _receive_n(driver, "tasks", 1)
            assert d.body == b"poison"
            seen.append(d.receives)
            await driver.nack(d, f"bad task id (receive {d.receives})")
        assert seen == [1, 2, 3]
        assert await driver.receive("tasks", max_messages=10, wait_s=1.0) == []  # not delivered again
        main = await asyncio.to_thread(_read_all, kafka_bootstrap, driver.topic("tasks"), settle=0.5)
        dead = await asyncio.to_thread(_read_all, kafka_bootstrap, f"{driver.topic('tasks')}.dead")
    finally:
        await driver.close()
    # the topic holds the original and one re-publication per retry, each with its receive count
    assert [(body, h.get(RECEIVES)) for body, h in main] == [
        (b"poison", b"0"), (b"poison", b"1"), (b"poison", b"2")]
    assert dead == [(b"poison", {RECEIVES: b"3", ERROR: b"bad task id (receive 3)"})]


# -- outbox -> queue publisher --------------------------------------------------------------------


async def _intents(url: str, queue: str, committed: int, rolled_back: int, *,
                   delay_s: float = 0.0, tag: str = "") -> list[bytes]:
    """Commit ``committed`` wake-ups for ``queue`` (one transaction each) and roll back others."""
    payloads = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for i in range(committed):
            async with conn.transaction(), conn.cursor() as cur:
                payload = f"{queue}:{tag}{i}".encode()
                await enqueue(cur, f"queue:{queue}", payload, delay_s=delay_s)
                payloads.append(payload)
        for i in range(rolled_back):
            with pytest.raises(RuntimeError):
                async with conn.transaction(), conn.cursor() as cur:
                    await enqueue(cur, f"queue:{queue}", f"{queue}:aborted:{i}".encode())
                    raise RuntimeError("the intent's transaction fails")
    return payloads


async def _unpublished(url: str) -> int:
    return int((await _all(url, "SELECT count(*) FROM state.outbox WHERE published_at IS NULL"))[0][0])


@contextlib.asynccontextmanager
async def _running(url: str, driver: QueueDriver) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(queue_publisher(url, driver, sweep_every=0.1).run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_publisher_sends_committed_intents_and_never_rolled_back_ones(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    q = _queue()
    committed = await _intents(queue_db, q, committed=20, rolled_back=5)
    async with _pg_driver(pool, queue_db) as driver, _running(queue_db, driver):
        async def all_published() -> bool:
            return await _unpublished(queue_db) == 0
        await _eventually(all_published)
        late = await _intents(queue_db, q, committed=3, rolled_back=2, tag="late")  # woken by NOTIFY
        await _eventually(all_published)
    assert await _bodies(queue_db, q) == committed + late  # each once, in commit order


async def test_publisher_holds_delayed_intents_until_their_time(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    q = _queue()
    delayed = await _intents(queue_db, q, committed=2, rolled_back=0, delay_s=1.0, tag="later")
    now = await _intents(queue_db, q, committed=3, rolled_back=0, tag="now")
    async with _pg_driver(pool, queue_db) as driver, _running(queue_db, driver):
        async def immediate_ones_arrived() -> bool:
            return len(await _bodies(queue_db, q)) >= 3
        await _eventually(immediate_ones_arrived)
        assert await _bodies(queue_db, q) == now
        await asyncio.sleep(0.3)
        assert await _bodies(queue_db, q) == now  # still held back

        async def delayed_ones_arrived() -> bool:
            return len(await _bodies(queue_db, q)) >= 5
        await _eventually(delayed_ones_arrived, timeout=5)
    assert await _bodies(queue_db, q) == now + delayed
    rows = await _all(queue_db, "SELECT payload, published_at >= available_at,"
                                " available_at - created_at >= interval '1 second'"
                                " FROM state.outbox WHERE payload = ANY(%s)", delayed)
    assert sorted((bytes(p), ok, held) for p, ok, held in rows) == [(p, True, True) for p in delayed]


class _Wrapped:
    """A real driver behind a wrapper whose ``publish`` misbehaves (the subclasses)."""

    def __init__(self, inner: QueueDriver) -> None:
        self.inner = inner

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        await self.inner.publish(queue, bodies)

    async def receive(self, queue: str, *, max_messages: int, wait_s: float) -> list[Delivery]:
        return await self.inner.receive(queue, max_messages=max_messages, wait_s=wait_s)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)

    async def nack(self, delivery: Delivery, error: str) -> None:
        await self.inner.nack(delivery, error)

    async def close(self) -> None:
        await self.inner.close()


class _CrashAfterPublish(_Wrapped):
    """Delegates ``publish`` to the real driver, then the publisher "dies": raises, or hangs until
    its task is canceled, before the outbox rows are marked."""

    def __init__(self, inner: QueueDriver, *, hang: bool) -> None:
        super().__init__(inner)
        self.hang = hang
        self.published: list[tuple[str, list[bytes]]] = []

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        await self.inner.publish(queue, bodies)
        self.published.append((queue, list(bodies)))
        if self.hang:
            await asyncio.Event().wait()
        raise ConnectionError("publisher killed after the queue accepted the batch")


async def test_publisher_crash_duplicates_at_the_queue_only_and_loses_no_intent(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    qa, qb = _queue(), _queue()
    a = await _intents(queue_db, qa, committed=10, rolled_back=3)
    b = await _intents(queue_db, qb, committed=10, rolled_back=3)
    outbox_ids = await _all(queue_db, "SELECT id, payload FROM state.outbox WHERE published_at IS NULL"
                                      " ORDER BY id")
    assert [bytes(p) for _, p in outbox_ids] == a + b  # rolled-back intents never reached the table
    async with _pg_driver(pool, queue_db) as real:
        # 1. the publisher raises right after qa's batch was accepted by the queue
        raising = _CrashAfterPublish(real, hang=False)
        stop = asyncio.Event()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(queue_publisher(queue_db, raising, sweep_every=0.1).run(stop), 10)
        assert raising.published == [(qa, a)]
        assert await _unpublished(queue_db) == 20  # nothing marked
        # 2. the publisher's task is canceled while qa's batch is accepted but not yet marked
        hanging = _CrashAfterPublish(real, hang=True)
        task = asyncio.create_task(queue_publisher(queue_db, hanging, sweep_every=0.1).run(stop))

        async def hanging_published() -> bool:
            return bool(hanging.published)
        await _eventually(hanging_published)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _unpublished(queue_db) == 20
        # 3. a healthy publisher (its locks were released by the dead ones) sends everything
        async with _running(queue_db, real):
            async def all_published() -> bool:
                return await _unpublished(queue_db) == 0
            await _eventually(all_published)
    # qa's intents reached the queue three times (two crashes), qb's once; nothing else did
    assert Counter(await _bodies(queue_db, qa)) == dict.fromkeys(a, 3)
    assert Counter(await _bodies(queue_db, qb)) == dict.fromkeys(b, 1)
    marked = await _all(queue_db, "SELECT id, payload FROM state.outbox WHERE published_at IS NOT NULL"
                                  " AND payload = ANY(%s) ORDER BY id", a + b)
    assert marked == outbox_ids  # each outbox row exactly once, none added


class _FailsOnce(_Wrapped):
    """A queue that refuses the first batch with a transient error (a broker or database hiccup)."""

    def __init__(self, inner: QueueDriver) -> None:
        super().__init__(inner)
        self.failures = 0

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        if self.failures == 0:
            self.failures += 1
            raise RetryableError("queue unavailable for a moment")
        await self.inner.publish(queue, bodies)


async def test_publisher_outlives_a_transient_queue_failure(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    q = _queue()
    committed = await _intents(queue_db, q, committed=5, rolled_back=1)
    async with _pg_driver(pool, queue_db) as real:
        flaky = _FailsOnce(real)
        stop = asyncio.Event()
        task = asyncio.create_task(queue_publisher(queue_db, flaky, sweep_every=0.1, retry_s=0.1).run(stop))
        try:
            async def all_published() -> bool:
                return task.done() or await _unpublished(queue_db) == 0
            await _eventually(all_published)
            assert not task.done()  # still publishing after the failure
            late = await _intents(queue_db, q, committed=2, rolled_back=0, tag="late")
            await _eventually(all_published)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert flaky.failures == 1
    assert await _bodies(queue_db, q) == committed + late


# -- wake-ups and claims --------------------------------------------------------------------------


async def test_a_claim_takes_the_woken_tasks_first_then_the_oldest_ready_ones(
    pool: AsyncConnectionPool[Any], queue_db: str
) -> None:
    job = JobPolicy("noop", "noop")
    store = TaskStore(pool, StaticJobCatalog({"noop": job}), lease=timedelta(seconds=30))
    org = f"org-{uuid.uuid4().hex[:8]}"  # only this test's tasks are claimable

    async def submit(n: int) -> list[uuid.UUID]:
        run = await store.submit_run(org_id=org, kind="t", dag=f"d{uuid.uuid4().hex}", dag_version=1,
                                     params={}, submitted_by="t",
                                     tasks=[NewTask(job, f"e{i}", {"i": i}) for i in range(n)])
        return run.tasks

    async with await psycopg.AsyncConnection.connect(queue_db, autocommit=True) as conn:
        await conn.execute("UPDATE state.tasks SET state = 'canceled' WHERE state = 'queued'")
    older = await submit(30)
    woken = await submit(3)
    first = await store.claim("w1", limit=5, prefer=[*woken, older[0], uuid.uuid4()], org_id=org)
    assert len(first) == 5
    assert {c.task_id for c in first} == {*woken, older[0], older[1]}
    # woken tasks that are leased already are not claimed again; the rest come in age order
    second = await store.claim("w2", limit=4, prefer=woken, org_id=org)
    assert [c.task_id for c in sorted(second, key=lambda c: older.index(c.task_id))] == older[2:6]
    assert {c.attempt for c in first + second} == {1}
