"""Pure parsing of price rows: ``token`` (address) or ``symbol`` (mapped to an address),
``timestamp`` (unix seconds or ISO-8601) and ``usd``; optional ``source``.

Any bad row raises :class:`PriceFeedError` naming where (``file:line`` for CSV and JSON lines,
``file:[index]`` for a JSON list) and the field, so a caller can store nothing of a bad file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tracekit.errors import TraceError

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_INT = re.compile(r"^[0-9]+$")
FIELDS = ("token", "symbol", "timestamp", "usd", "source")
MAX_TS = 253402300799  # 9999-12-31T23:59:59Z


class PriceFeedError(TraceError):
    """A price feed row is invalid."""


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One price: ``token`` lower-case address, ``ts`` unix seconds, ``usd`` exact decimal."""

    token: str
    ts: int
    usd: Decimal
    source: str
    symbol: str | None = None


def parse_symbols(pairs: Iterable[str]) -> dict[str, str]:
    """``["TRC=0xabc..."]`` -> {"TRC": "0xabc..."} (symbols are case-insensitive)."""
    out = {}
    for pair in pairs:
        symbol, sep, address = pair.partition("=")
        if not sep or not symbol.strip() or not _ADDRESS.match(address.strip()):
            raise PriceFeedError(f"symbol mapping {pair!r} should be SYMBOL=0x<40 hex digits>")
        out[symbol.strip().upper()] = address.strip().lower()
    return out


def parse_timestamp(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("not a timestamp")
    if isinstance(value, int):
        ts = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not whole seconds")
        ts = int(value)
    elif isinstance(value, str) and _INT.match(value.strip()):
        ts = int(value.strip())
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is neither unix seconds nor ISO-8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # a naive ISO time is UTC
        ts = int(moment.timestamp())
    else:
        raise ValueError(f"{value!r} is neither unix seconds nor ISO-8601")
    if not 0 <= ts <= MAX_TS:
        raise ValueError(f"{ts} is out of range")
    return ts


def parse_usd(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a number")
    try:
        usd = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not usd.is_finite() or usd < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative number")
    return usd


def parse_row(
    row: Mapping[str, Any], where: str, *, symbols: Mapping[str, str], default_source: str
) -> PricePoint:
    """One row (a dict of the fields) -> PricePoint; PriceFeedError ``where: field 'x': reason``."""

    def bad(name: str, reason: str) -> PriceFeedError:
        return PriceFeedError(f"{where}: field {name!r}: {reason}")

    token_raw, symbol_raw = row.get("token"), row.get("symbol")
    token = str(token_raw).strip() if token_raw not in (None, "") else ""
    symbol = str(symbol_raw).strip() if symbol_raw not in (None, "") else ""
    if token:
        if not _ADDRESS.match(token):
            raise bad("token", f"{token_raw!r} is not an address (0x and 40 hex digits)")
        token = token.lower()
    elif symbol:
        mapped = symbols.get(symbol.upper())
        if mapped is None:
            raise bad("symbol", f"unknown symbol {symbol!r} (map it with --symbol {symbol}=0x...)")
        token = mapped
    else:
        raise bad("token", "missing (give token or symbol)")
    for name in ("timestamp", "usd"):
        if row.get(name) in (None, ""):
            raise bad(name, "missing")
    try:
        ts = parse_timestamp(row["timestamp"])
    except ValueError as exc:
        raise bad("timestamp", str(exc)) from None
    try:
        usd = parse_usd(row["usd"])
    except ValueError as exc:
        raise bad("usd", str(exc)) from None
    source = row.get("source")
    return PricePoint(
        token=token, ts=ts, usd=usd, symbol=symbol.upper() or None,
        source=str(source).strip() if source not in (None, "") else default_source,
    )


def _dedupe(points: Iterable[tuple[str, PricePoint]]) -> list[PricePoint]:
    """One point per (token, ts); the same key with two prices is an error naming both places."""
    seen: dict[tuple[str, int], tuple[str, PricePoint]] = {}
    for where, point in points:
        key = (point.token, point.ts)
        if key in seen:
            first_where, first = seen[key]
            if first.usd != point.usd:
                raise PriceFeedError(
                    f"{where}: price of {point.token} at {point.ts} given twice ({first_where}: "
                    f"{first.usd}, here: {point.usd})"
                )
            continue
        seen[key] = (where, point)
    return [point for _, point in seen.values()]


def parse_records(
    records: object, origin: str, *, symbols: Mapping[str, str] = {}, default_source: str
) -> list[PricePoint]:
    """A JSON document: a list of row objects, or ``{"prices": [...]}``."""
    if isinstance(records, dict) and isinstance(records.get("prices"), list):
        records = records["prices"]
    if not isinstance(records, list):
        raise PriceFeedError(f"{origin}: expected a JSON list of price objects")
    parsed = []
    for i, record in enumerate(records):
        where = f"{origin}:[{i}]"
        if not isinstance(record, dict):
            raise PriceFeedError(f"{where}: expected an object, got {type(record).__name__}")
        parsed.append((where, parse_row(record, where, symbols=symbols, default_source=default_source)))
    return _dedupe(parsed)


def _parse_csv(text: str, path: Path, symbols: Mapping[str, str], source: str) -> list[PricePoint]:
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    header: list[str] | None = None
    parsed = []
    try:
        for record in reader:
            line = reader.line_num
            cells = [c.strip() for c in record]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if header is None:
                header = [c.lower() for c in cells]
                if "timestamp" not in header or "usd" not in header or not {"token", "symbol"} & set(header):
                    raise PriceFeedError(
                        f"{path}:{line}: header must name timestamp, usd and token or symbol "
                        f"(got {','.join(cells)})"
                    )
                continue
            if len(cells) != len(header):
                raise PriceFeedError(f"{path}:{line}: {len(cells)} columns, the header has {len(header)}")
            row = dict(zip(header, cells, strict=True))
            where = f"{path}:{line}"
            parsed.append((where, parse_row(row, where, symbols=symbols, default_source=source)))
    except csv.Error as exc:
        raise PriceFeedError(f"{path}:{reader.line_num}: {exc}") from None
    return _dedupe(parsed)


def _parse_json_lines(text: str, path: Path, symbols: Mapping[str, str], source: str) -> list[PricePoint]:
    parsed = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{line}"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PriceFeedError(f"{where}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise PriceFeedError(f"{where}: expected an object, got {type(record).__name__}")
        parsed.append((where, parse_row(record, where, symbols=symbols, default_source=source)))
    return _dedupe(parsed)


def parse_file(path: Path, *, symbols: Mapping[str, str] = {}, source: str | None = None) -> list[PricePoint]:
    """Every point of a ``.csv``, ``.json`` (list) or ``.jsonl``/``.ndjson`` file; all or an error."""
    default_source = source or f"file:{path.name}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PriceFeedError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise PriceFeedError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PriceFeedError(f"{path}: cannot read: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _parse_csv(text, path, symbols, default_source)
    if suffix in (".jsonl", ".ndjson"):
        return _parse_json_lines(text, path, symbols, default_source)
    if suffix == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PriceFeedError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        return parse_records(document, str(path), symbols=symbols, default_source=default_source)
    raise PriceFeedError(f"{path}: unknown format (expected .csv, .json, .jsonl or .ndjson)")
