"""The dispatcher's periodic gc: a pass every interval (the first one interval after start), a
failed pass logged and tried again, none at all without a warehouse and an object store."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dispatcher.api.deps import ApiConfig
from dispatcher.service import gc_forever, gc_of


async def test_gc_runs_every_interval_survives_a_failed_pass_and_stops() -> None:
    passes: list[str] = []
    enough = threading.Event()

    def collect() -> None:
        passes.append(threading.current_thread().name)
        if len(passes) == 1:
            raise RuntimeError("the object store is down")
        if len(passes) >= 3:
            enough.set()

    stop = asyncio.Event()
    loop = asyncio.create_task(gc_forever(collect, stop, 0.01))
    await asyncio.to_thread(enough.wait, 5)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert len(passes) >= 3
    assert threading.main_thread().name not in passes  # passes run in a thread, not on the loop


async def test_no_pass_before_the_first_interval() -> None:
    passes: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.create_task(gc_forever(lambda: passes.append(1), stop, 3600))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert passes == []


@pytest.mark.parametrize(("warehouse", "objects"), [(None, "s3://d"), ("s3://d/warehouse", None)])
def test_no_gc_without_a_warehouse_and_an_object_store(warehouse: str | None, objects: str | None) -> None:
    config = ApiConfig("a", "w", b"k" * 32, database_url="postgresql://x@h/db", warehouse=warehouse,
                       object_store=objects)
    assert gc_of(config) is None
    both = ApiConfig("a", "w", b"k" * 32, database_url="postgresql://x@h/db", warehouse="s3://d/warehouse",
                     object_store="s3://d")
    assert gc_of(both) is not None
