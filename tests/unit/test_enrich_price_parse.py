"""Price feed parsing: formats, timestamps, symbol mapping, and file:line/field errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from operators.price_feed.parse import PriceFeedError, parse_file, parse_records, parse_symbols
from operators.price_feed.sink import encode_point
from tracekit.avro.wire import AvroCodec

TOKEN = "0x" + "aa" * 20


def test_csv_with_symbols_and_iso_times(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "symbol,token,timestamp,usd\n"
        f",{TOKEN.upper().replace('0X', '0x')},1700000000,1.5\n"
        "trc,,2023-11-14T22:13:21Z,1.6\n"
        "TRC,,2023-11-14T22:13:22,1.7\n"  # naive ISO is UTC
    )
    points = parse_file(path, symbols=parse_symbols([f"TRC={TOKEN}"]))
    assert [(p.token, p.ts, p.usd, p.symbol, p.source) for p in points] == [
        (TOKEN, 1700000000, Decimal("1.5"), None, "file:p.csv"),
        (TOKEN, 1700000001, Decimal("1.6"), "TRC", "file:p.csv"),
        (TOKEN, 1700000002, Decimal("1.7"), "TRC", "file:p.csv"),
    ]


def test_json_list_and_lines(tmp_path: Path) -> None:
    doc = tmp_path / "p.json"
    doc.write_text(f'{{"prices": [{{"token": "{TOKEN}", "timestamp": 5, "usd": 2, "source": "x"}}]}}')
    assert [(p.ts, p.usd, p.source) for p in parse_file(doc)] == [(5, Decimal(2), "x")]
    lines = tmp_path / "p.jsonl"
    lines.write_text(f'{{"token": "{TOKEN}", "timestamp": "6", "usd": "0.1"}}\n\n')
    assert [(p.ts, p.usd) for p in parse_file(lines, source="s")] == [(6, Decimal("0.1"))]


@pytest.mark.parametrize(
    ("name", "body", "error"),
    [
        (
            "p.csv",
            f"token,timestamp,usd\n{TOKEN},1,1\n{TOKEN},2,-1\n",
            "p.csv:3: field 'usd': '-1' is not a finite, non-negative number",
        ),
        (
            "p.csv",
            f"token,timestamp,usd\n{TOKEN},yesterday,1\n",
            "p.csv:2: field 'timestamp': 'yesterday' is neither unix seconds nor ISO-8601",
        ),
        ("p.csv", "token,timestamp,usd\n0x12,1,1\n", "p.csv:2: field 'token': '0x12' is not an address"),
        ("p.csv", "symbol,timestamp,usd\nXYZ,1,1\n", "p.csv:2: field 'symbol': unknown symbol 'XYZ'"),
        ("p.csv", f"token,timestamp,usd\n{TOKEN},1\n", "p.csv:2: 2 columns, the header has 3"),
        ("p.csv", f"token,time,usd\n{TOKEN},1,1\n", "p.csv:1: header must name timestamp, usd"),
        ("p.csv", f"token,timestamp,usd\n{TOKEN},1,NaN\n", "p.csv:2: field 'usd'"),
        ("p.csv", f"token,timestamp,usd\n{TOKEN},1,1\n{TOKEN},1,2\n", "p.csv:3: price of"),
        (
            "p.json",
            f'[{{"token": "{TOKEN}", "timestamp": 1, "usd": 1}}, {{"token": "{TOKEN}"}}]',
            "p.json:[1]: field 'timestamp': missing",
        ),
        ("p.json", "[1,", "p.json:1: invalid JSON"),
        (
            "p.jsonl",
            f'{{"token": "{TOKEN}", "timestamp": 1, "usd": 1}}\n[]\n',
            "p.jsonl:2: expected an object",
        ),
        ("p.txt", "", "p.txt: unknown format"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, name: str, body: str, error: str) -> None:
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(PriceFeedError) as info:
        parse_file(path)
    assert str(info.value).startswith(f"{tmp_path}/{error}")


def test_bad_symbol_mapping_and_http_document() -> None:
    with pytest.raises(PriceFeedError, match="SYMBOL=0x"):
        parse_symbols(["TRC:0x1"])
    with pytest.raises(PriceFeedError, match="expected a JSON list"):
        parse_records({"a": 1}, "http://x", default_source="s")


def test_message_encoding() -> None:
    [point] = parse_records([{"token": TOKEN, "timestamp": 7, "usd": "1.10"}], "u", default_source="s")
    key, value = encode_point(point)
    assert key == f"{TOKEN}:7".encode()
    assert AvroCodec().decode(value) == (
        "trace.prices.Price",
        {"token": TOKEN, "symbol": None, "ts": 7, "usd": "1.10", "source": "s"},
    )
