"""Labels on the real Postgres: CSV import is all-or-nothing with file:line errors, and a running
LabelCache sees adds and removes within 3 seconds (LISTEN trace_labels)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from streams.enrich.cli import labels_app as app
from streams.enrich.labels import LabelCache, LabelError, LabelStore
from tracekit.errors import TraceError

A = "0x" + "a1" * 20
B = "0x" + "b2" * 20


def org() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def count(pg_url: str, org_id: str) -> int:
    with psycopg.connect(pg_url) as conn:
        sql = "SELECT count(*) FROM state.address_labels WHERE org_id = %s"
        row = conn.execute(sql, (org_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_add_remove_list(pg_url: str) -> None:
    store = LabelStore(pg_url, org_id=org())
    assert store.add(A.upper().replace("0X", "0x"), " exchange ")
    assert not store.add(A, "exchange")
    assert store.add(A, "hot wallet", source="ops")
    assert [(x.address, x.label, x.source) for x in store.list()] == [
        (A, "exchange", "cli"), (A, "hot wallet", "ops")]
    assert store.list(B) == []
    assert store.remove(A, "exchange")
    assert not store.remove(A, "exchange")
    with pytest.raises(LabelError, match="not an address"):
        store.add("0x123", "x")


def test_import_csv_stores_all_rows(pg_url: str, tmp_path: Path) -> None:
    org_id = org()
    path = tmp_path / "labels.csv"
    path.write_text(f"address,label,source\n{A},exchange,\n\n{B},whale,etherscan\n{A},exchange\n")
    assert LabelStore(pg_url, org_id=org_id).import_csv(path) == 2
    assert [(x.address, x.label, x.source) for x in LabelStore(pg_url, org_id=org_id).list()] == [
        (A, "exchange", "csv"), (B, "whale", "etherscan")]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (f"{A},exchange\n0xnothex,whale\n", "labels.csv:2: not an address"),
        (f"address,label\n{A},exchange\n{B},\n", "labels.csv:3: empty label"),
        (f"{A},exchange\n{B},a,b,c\n", "labels.csv:2: expected address,label[,source], got 4 columns"),
        (f"{A},exchange\n{B}\n", "labels.csv:2: expected address,label[,source], got 1 columns"),
        (f'{A},exchange\n{B},"unterminated\n', "labels.csv:2: unexpected end of data"),
    ],
)
def test_bad_csv_fails_whole_import(pg_url: str, tmp_path: Path, body: str, error: str) -> None:
    org_id = org()
    path = tmp_path / "labels.csv"
    path.write_text(body)
    with pytest.raises(LabelError) as info:
        LabelStore(pg_url, org_id=org_id).import_csv(path)
    assert str(info.value).startswith(f"{path.parent}/{error}")
    assert "\n" not in str(info.value)
    assert count(pg_url, org_id) == 0


def test_cli(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACE_DATABASE_URL", pg_url)
    org_id = org()
    runner = CliRunner()
    result = runner.invoke(app, ["add", A, "exchange", "--org", org_id])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["list", "--org", org_id, "--address", A])
    assert result.exit_code == 0 and "exchange" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{B},whale\nnope,x\n")
    result = runner.invoke(app, ["import", str(bad), "--org", org_id])
    assert isinstance(result.exception, TraceError)
    assert str(result.exception) == f"{bad}:2: not an address (0x and 40 hex digits): 'nope'"
    result = runner.invoke(app, ["remove", A, "nope", "--org", org_id])
    assert isinstance(result.exception, TraceError)
    assert count(pg_url, org_id) == 1


async def wait_for(cache: LabelCache, address: str, want: frozenset[str], within: float = 3.0) -> float:
    start = time.monotonic()
    while cache.labels_of(address) != want:
        if time.monotonic() - start > within:
            raise AssertionError(f"cache has {cache.labels_of(address)}, want {want} after {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_cache_sees_add_and_remove_within_3s(pg_url: str, tmp_path: Path) -> None:
    org_id, other = org(), org()
    store = LabelStore(pg_url, org_id=org_id)
    store.add(A, "exchange")
    async with LabelCache(pg_url, org_id=org_id, reload_interval=600) as cache:
        assert cache.labels_of(A) == frozenset({"exchange"})
        await asyncio.to_thread(store.add, B, "whale")
        await wait_for(cache, B, frozenset({"whale"}))
        await asyncio.to_thread(store.remove, A, "exchange")
        await wait_for(cache, A, frozenset())
        csv_path = tmp_path / "bulk.csv"
        csv_path.write_text("".join(f"0x{i:040x},bulk\n" for i in range(500)))
        await asyncio.to_thread(store.import_csv, csv_path)
        await wait_for(cache, f"0x{499:040x}", frozenset({"bulk"}))
        reloads = cache.reloads
        await asyncio.to_thread(LabelStore(pg_url, org_id=other).add, A, "elsewhere")  # other org
        await asyncio.sleep(0.3)
        assert cache.labels_of(A) == frozenset()
        assert cache.reloads == reloads


async def test_periodic_reload_is_a_safety_net(pg_url: str) -> None:
    org_id = org()
    async with LabelCache(pg_url, org_id=org_id, reload_interval=0.3) as cache:
        before = cache.reloads
        await asyncio.sleep(1.0)
        assert cache.reloads >= before + 2


async def test_stop_right_after_start_closes_cleanly(pg_url: str) -> None:
    cache = LabelCache(pg_url, org_id=org())
    await cache.start()
    await cache.stop()
    await cache.stop()  # idempotent
