"""Address labels: :class:`LabelStore` edits ``state.address_labels``; :class:`LabelCache` serves
them per event from memory.

Every change to the table notifies Postgres channel ``trace_labels`` (payload: the org id, see
migration 0002). The cache LISTENs on a dedicated connection and reloads its org's labels within
a fraction of a second of a change, plus a periodic full reload as a safety net (and after a
reconnect, since notifications sent while disconnected are lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from tracekit.db import connect
from tracekit.errors import ConfigError, RetryableError, TraceError
from tracekit.retry import Backoff

log = logging.getLogger(__name__)

CHANNEL = "trace_labels"
DEFAULT_ORG = "default"
MAX_LABEL = 200
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_EMPTY: frozenset[str] = frozenset()


class LabelError(TraceError):
    """A label or address is invalid."""


def normalize_address(value: str) -> str:
    """``value`` as a lower-case 0x address; :class:`LabelError` if it is not one."""
    text = value.strip()
    if not _ADDRESS.match(text):
        raise LabelError(f"not an address (0x and 40 hex digits): {value!r}")
    return text.lower()


def normalize_label(value: str) -> str:
    text = value.strip()
    if not text:
        raise LabelError("empty label")
    if len(text) > MAX_LABEL:
        raise LabelError(f"label longer than {MAX_LABEL} characters")
    return text


@dataclass(frozen=True, slots=True)
class Label:
    address: str
    label: str
    source: str
    created_at: datetime


class LabelStore:
    """Add, remove, list and bulk-import the labels of one org (synchronous; CLI and tools)."""

    def __init__(self, database_url: str, *, org_id: str = DEFAULT_ORG) -> None:
        self.database_url = database_url
        self.org_id = org_id

    def add(self, address: str, label: str, *, source: str = "cli") -> bool:
        """Label ``address``; False if it already had that label."""
        row = (self.org_id, normalize_address(address), normalize_label(label), source)
        with connect(self.database_url) as conn:
            cur = conn.execute(
                "INSERT INTO state.address_labels (org_id, address, label, source)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", row,
            )
            return cur.rowcount == 1

    def remove(self, address: str, label: str) -> bool:
        """Remove one label of ``address``; False if it did not have it."""
        with connect(self.database_url) as conn:
            cur = conn.execute(
                "DELETE FROM state.address_labels WHERE org_id = %s AND address = %s AND label = %s",
                (self.org_id, normalize_address(address), label.strip()),
            )
            return cur.rowcount == 1

    def list(self, address: str | None = None) -> list[Label]:
        """The org's labels (of one address if given), by address then label."""
        sql = "SELECT address, label, source, created_at FROM state.address_labels WHERE org_id = %s"
        params: list[object] = [self.org_id]
        if address is not None:
            sql += " AND address = %s"
            params.append(normalize_address(address))
        with connect(self.database_url) as conn:
            rows = conn.execute(sql + " ORDER BY address, label", params).fetchall()
        return [Label(str(a), str(lb), str(s), c) for a, lb, s, c in rows]  # type: ignore[arg-type]

    def import_csv(self, path: Path, *, source: str = "csv") -> int:
        """Import ``address,label[,source]`` rows (an optional header row is skipped).

        All rows are checked first: any bad row raises :class:`LabelError` ``file:line: reason``
        and nothing is stored. Otherwise all rows are inserted in one transaction; returns how
        many were new.
        """
        rows = parse_labels_csv(path, default_source=source)
        with connect(self.database_url) as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO state.address_labels (org_id, address, label, source)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(self.org_id, *row) for row in rows],
                returning=False,
            )
            return max(cur.rowcount, 0)


def parse_labels_csv(path: Path, *, default_source: str = "csv") -> list[tuple[str, str, str]]:
    """(address, label, source) rows of a labels CSV; :class:`LabelError` ``file:line: reason``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LabelError(f"{path}: cannot read: {exc.strerror}") from None
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    first = True
    try:
        for record in reader:
            line = reader.line_num
            cells = [c.strip() for c in record]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if first and [c.lower() for c in cells[:2]] == ["address", "label"]:
                first = False
                if cells[2:] not in ([], ["source"]):
                    raise LabelError(f"{path}:{line}: header must be address,label[,source]")
                continue
            first = False
            if len(cells) not in (2, 3):
                raise LabelError(f"{path}:{line}: expected address,label[,source], got {len(cells)} columns")
            try:
                address, label = normalize_address(cells[0]), normalize_label(cells[1])
            except LabelError as exc:
                raise LabelError(f"{path}:{line}: {exc}") from None
            row_source = cells[2] if len(cells) == 3 and cells[2] else default_source
            if (address, label) not in seen:
                seen.add((address, label))
                rows.append((address, label, row_source))
    except csv.Error as exc:
        raise LabelError(f"{path}:{reader.line_num}: {exc}") from None
    return rows


def _index(rows: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    grouped: dict[str, set[str]] = {}
    for address, label in rows:
        grouped.setdefault(address.lower(), set()).add(label)
    return {address: frozenset(labels) for address, labels in grouped.items()}


class LabelCache:
    """{address: frozenset(labels)} of one org, kept fresh from Postgres (see the module doc).

    ``async with LabelCache(url) as cache: cache.labels_of(address)``; or :meth:`fixed` for a
    cache without a database (tests, replays).
    """

    def __init__(
        self,
        database_url: str | None,
        *,
        org_id: str = DEFAULT_ORG,
        reload_interval: float = 60.0,
        debounce: float = 0.05,
    ) -> None:
        self.database_url = database_url
        self.org_id = org_id
        self.reload_interval = reload_interval
        self.debounce = debounce
        self._labels: dict[str, frozenset[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None  # the LISTEN one
        self.reloads = 0
        self.loaded_at: float | None = None  # time.monotonic() of the last reload

    @classmethod
    def fixed(cls, labels: Mapping[str, Iterable[str]]) -> LabelCache:
        cache = cls(None)
        cache._labels = _index((a, lb) for a, lbs in labels.items() for lb in lbs)
        return cache

    def labels_of(self, address: str) -> frozenset[str]:
        """The labels of ``address`` (any case); empty if none. O(1)."""
        return self._labels.get(address.lower(), _EMPTY)

    def __len__(self) -> int:
        return len(self._labels)

    async def reload(self) -> None:
        """Replace the whole map with the org's rows (one query; the swap is atomic)."""
        if self.database_url is None:
            return
        try:
            async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT address, label FROM state.address_labels WHERE org_id = %s", (self.org_id,)
                )
                rows = await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise RetryableError(f"cannot load labels: {str(exc).strip().splitlines()[0]}") from exc
        self._labels = _index((str(a), str(lb)) for a, lb in rows)
        self.reloads += 1
        self.loaded_at = time.monotonic()

    async def start(self) -> None:
        """LISTEN, load once (raising if Postgres is unreachable), then follow changes in a task.

        The first load comes after LISTEN, so no change between the two can be missed.
        """
        if self.database_url is None:
            raise ConfigError("LabelCache.start needs a database URL")
        conn = await self._listen_connection()
        try:
            await self.reload()
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._task = asyncio.create_task(self._follow(conn), name="label-cache")

    async def _listen_connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        assert self.database_url is not None  # noqa: S101  # start() checked
        try:
            conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise RetryableError(f"cannot listen for labels: {str(exc).strip().splitlines()[0]}") from exc
        await conn.execute(f"LISTEN {CHANNEL}")
        return conn

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None and not self._conn.closed:  # cancelled before the task ran
            await self._conn.close()
        self._conn = None

    async def __aenter__(self) -> LabelCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _follow(self, conn: psycopg.AsyncConnection[tuple[object, ...]] | None) -> None:
        backoff = Backoff(0.5, 30.0)
        try:
            while True:
                try:
                    if conn is None:
                        conn = self._conn = await self._listen_connection()
                        await self.reload()  # changes made while we were not listening
                        backoff.reset()
                    await self._listen(conn)
                except (psycopg.OperationalError, RetryableError) as exc:
                    delay = backoff.next()
                    log.warning("label cache: %s; reconnecting in %.1fs", str(exc).strip(), delay)
                    if conn is not None:
                        await conn.close()
                    conn = None
                    await asyncio.sleep(delay)
        finally:
            if conn is not None:
                await conn.close()

    async def _listen(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        next_full = time.monotonic() + self.reload_interval
        while True:
            changed = False
            timeout = max(0.0, next_full - time.monotonic())
            async for note in conn.notifies(timeout=timeout, stop_after=1):
                changed = note.payload in (self.org_id, "")
            if changed:
                # let the rest of a burst arrive, then reload once
                async for _note in conn.notifies(timeout=self.debounce):
                    pass
                await self.reload()
            elif time.monotonic() >= next_full:
                await self.reload()
            else:
                continue
            next_full = time.monotonic() + self.reload_interval
