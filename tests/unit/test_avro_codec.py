"""The Avro contracts and codec: round trips in both framings, malformed input, encode errors.

The Confluent framing runs against a tiny in-process HTTP server that implements the two
Schema Registry endpoints the codec uses (``POST /subjects/{s}/versions``, ``GET /schemas/ids/{id}``).
"""

from __future__ import annotations

import copy
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fastavro
import fastavro.schema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.avro import BLOCK, LOG, REORG, TRANSACTION, AvroCodec, default_schemas, subject_name
from tracekit.avro.registry import IncompatibleSchema, RegistryUnavailable, SchemaRegistryClient
from tracekit.avro.schemas import canonical_form, crc64_avro, read_schema_files, record_schema
from tracekit.errors import DecodeError, RetryableError, SchemaError

TOPIC = "trace.chain.10143.blocks"
U64 = 2**64 - 1


# -- sample data ----------------------------------------------------------------------------------


def hexs(n: int, seed: int) -> str:
    return "0x" + (seed.to_bytes(4, "big") * (n // 4 + 1))[:n].hex()


def transaction(i: int, block_number: int = 1_000) -> dict[str, Any]:
    return {
        "block_number": block_number,
        "transaction_index": i,
        "transaction_hash": hexs(32, i),
        "nonce": str(i),
        "from_address": hexs(20, i + 1),
        "to_address": None if i % 7 == 0 else hexs(20, i + 2),
        "value": str(10**18 * i + 2**255),
        "input": "0x" if i % 2 else hexs(68, i),
        "gas_limit": "21000",
        "gas_price": "1000000000",
        "max_fee_per_gas": None if i % 3 == 0 else "2000000000",
        "max_priority_fee_per_gas": None if i % 3 == 0 else "1000000",
        "gas_used": "21000",
        "effective_gas_price": "1000000000",
        "success": i % 5 != 0,
        "transaction_type": 2,
        "contract_address": hexs(20, i + 3) if i % 7 == 0 else None,
    }


def log(i: int, block_number: int = 1_000) -> dict[str, Any]:
    return {
        "block_number": block_number,
        "transaction_index": i // 2,
        "log_index": i,
        "transaction_hash": hexs(32, i // 2),
        "address": hexs(20, i),
        "topic0": hexs(32, 7),
        "topic1": hexs(32, i),
        "topic2": None if i % 2 else hexs(32, i + 1),
        "topic3": None,
        "data": hexs(64, i),
    }


def block(n_tx: int = 3, n_logs: int = 5, number: int = 1_000) -> dict[str, Any]:
    return {
        "chain_id": 10143,
        "block_number": number,
        "block_hash": hexs(32, number),
        "parent_hash": hexs(32, number - 1),
        "timestamp": 1_700_000_000,
        "author": hexs(20, 99),
        "gas_used": "2100000",
        "gas_limit": "30000000",
        "base_fee_per_gas": "7",
        "extra_data": "0x",
        "observed_at_ms": 1_700_000_000_123,
        "idempotency_key": f"10143:{number}:{hexs(32, number)}",
        "transactions": [transaction(i, number) for i in range(n_tx)],
        "logs": [log(i, number) for i in range(n_logs)],
    }


def reorg() -> dict[str, Any]:
    return {
        "chain_id": 10143,
        "common_ancestor_number": 997,
        "common_ancestor_hash": hexs(32, 997),
        "depth": 3,
        "orphaned_numbers": [998, 999, 1000],
        "orphaned_hashes": [hexs(32, 998), hexs(32, 999), hexs(32, 1000)],
        "replacement_hashes": [hexs(32, 5998), hexs(32, 5999)],
        "detected_at_ms": 1_700_000_001_000,
        "idempotency_key": "10143:reorg:997:3",
    }


ALERT = "trace.alerts.Alert"
ALERT_SAMPLE = {
    "alert_id": "ab" * 32,
    "kind": "RETRACTION",
    "rule_id": "big-transfer",
    "rule_version": 3,
    "tier": "INSTANT",
    "severity": "high",
    "chain_id": 10143,
    "block_number": 7,
    "block_hash": "0x" + "cd" * 32,
    "event_key": "10143:transfer:7:0",
    "event_type": "transfer",
    "summary": "1,000 TRC",
    "details_json": "{}",
    "fired_at_ms": 1_795_000_000_000,
    "observed_at_ms": 1_795_000_000_000,
}
ENRICHED = ("trace.enrich.Transfer", "trace.enrich.StakeChange", "trace.enrich.BlockEnd")
_COMMON = {
    "chain_id": 10143,
    "block_number": 9,
    "block_hash": "0x" + "ab" * 32,
    "timestamp": 1_795_000_000,
    "log_index": 2,
    "transaction_hash": "0x" + "cd" * 32,
    "amount": str(10**24),
}
TRANSFER_SAMPLE = {
    **_COMMON,
    "token": "0x" + "11" * 20,
    "from_address": "0x" + "00" * 20,
    "to_address": "0x" + "22" * 20,
    "action": "mint",
    "decimals": 18,
    "usd_value": "50000000.5",
    "from_labels": [],
    "to_labels": ["exchange"],
    "idempotency_key": "10143:transfer:9:0xab:2",
}
STAKE_SAMPLE = {
    **_COMMON,
    "staking_contract": "0x" + "33" * 20,
    "delegator": "0x" + "44" * 20,
    "validator": "0x" + "55" * 20,
    "action": "undelegate",
    "delegator_labels": ["fund"],
    "validator_labels": [],
    "idempotency_key": "10143:stake_change:9:0xab:2",
}
BLOCK_END_SAMPLE = {
    "chain_id": 10143,
    "block_number": 9,
    "block_hash": "0x" + "ab" * 32,
    "parent_hash": "0x" + "aa" * 32,
    "timestamp": 1_795_000_000,
    "record_count": 0,
    "idempotency_key": "10143:block_end:9:0xab",
}
SAMPLES = {
    TRANSACTION: transaction(4),
    LOG: log(3),
    BLOCK: block(),
    REORG: reorg(),
    ALERT: ALERT_SAMPLE,
    ENRICHED[0]: TRANSFER_SAMPLE,
    ENRICHED[1]: STAKE_SAMPLE,
    ENRICHED[2]: BLOCK_END_SAMPLE,
    "trace.prices.Price": {
        "token": "0x" + "11" * 20,
        "symbol": "TRC",
        "ts": 1_795_000_000,
        "usd": "50.25",
        "source": "file:p.csv",
    },
}


# -- a fake Confluent Schema Registry -------------------------------------------------------------


class FakeRegistry(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RegistryHandler)
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.fail_with: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, subject: str, schema: str) -> int:
        known = {text: schema_id for schema_id, text in self.schemas.items()}
        schema_id = known.get(schema) or len(self.schemas) + 1
        self.schemas[schema_id] = schema
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id


class _RegistryHandler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        self.server.requests.append(("POST", self.path, self.headers.get("Content-Type")))
        if self.server.fail_with is not None:
            self._reply(self.server.fail_with, {"error_code": self.server.fail_with, "message": "nope"})
            return
        match = re.fullmatch(r"/subjects/([^/]+)/versions", self.path)
        if match is None:
            self._reply(404, {"error_code": 404, "message": "no such endpoint"})
            return
        subject = match.group(1).replace("%2F", "/")
        self._reply(200, {"id": self.server.add(subject, json.loads(body)["schema"])})

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, None))
        if self.server.fail_with is not None:
            self._reply(self.server.fail_with, {"error_code": self.server.fail_with, "message": "nope"})
            return
        match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
        schema = self.server.schemas.get(int(match.group(1))) if match else None
        if schema is None:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})
            return
        self._reply(200, {"schema": schema})


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def registry_codec(registry: FakeRegistry) -> Iterator[AvroCodec]:
    with AvroCodec(registry.url, topic=TOPIC) as codec:
        yield codec


# -- the contracts --------------------------------------------------------------------------------


def test_contract_files_are_documented_records() -> None:
    files = read_schema_files()
    assert set(files) == {
        "alert.avsc",
        "block.avsc",
        "log.avsc",
        "reorg.avsc",
        "transaction.avsc",
        "transfer.avsc",
        "stake_change.avsc",
        "block_end.avsc",
        "price.avsc",
    }
    namespaces = {
        "alert.avsc": "trace.alerts",
        "transfer.avsc": "trace.enrich",
        "stake_change.avsc": "trace.enrich",
        "block_end.avsc": "trace.enrich",
        "price.avsc": "trace.prices",
    }
    for name, schema in files.items():
        assert schema["namespace"] == namespaces.get(name, "trace.chain"), name
        assert schema["doc"], name
        for fld in schema["fields"]:
            assert fld.get("doc"), f"{name}: {fld['name']} has no doc"
            if isinstance(fld["type"], list):
                assert fld["type"][0] == "null" and fld["default"] is None, f"{name}: {fld['name']}"
    types = {f["name"]: f["type"] for f in files["block.avsc"]["fields"]}
    assert types["transactions"] == {"type": "array", "items": TRANSACTION}  # referenced, not inlined
    assert types["logs"] == {"type": "array", "items": LOG}
    assert set(default_schemas()) == {TRANSACTION, LOG, BLOCK, REORG, ALERT, *ENRICHED, "trace.prices.Price"}


@pytest.mark.parametrize(
    ("schema", "canonical", "signed_fingerprint"),
    [  # Apache Avro's published vectors (share/test/data/schema-tests.txt)
        ('"null"', '"null"', 7195948357588979594),
        ('{"type":"int"}', '"int"', 8247732601305521295),
        (
            '{"type":"fixed","name":"foo","size":15}',
            '{"name":"foo","type":"fixed","size":15}',
            1756455273707447556,
        ),
        (
            '{"type":"record","name":"foo","fields":[{"name":"f1","type":"boolean"}]}',
            '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
            7843277075252814651,
        ),
    ],
)
def test_canonical_form_and_crc64_avro_match_the_spec_vectors(
    schema: str, canonical: str, signed_fingerprint: int
) -> None:
    assert canonical_form(json.loads(schema)) == canonical
    assert crc64_avro(canonical.encode()) == signed_fingerprint & U64


def test_contract_fingerprints_agree_with_fastavro() -> None:
    for rec in default_schemas().values():
        fp = fastavro.schema.fingerprint(rec.canonical_form, "CRC-64-AVRO")
        assert rec.fingerprint.to_bytes(8, "little").hex() == fp
        assert rec.single_object_header == b"\xc3\x01" + bytes.fromhex(fp)
        assert record_schema(rec.schema_json).fingerprint == rec.fingerprint


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_object_round_trip(name: str) -> None:
    codec = AvroCodec()
    payload = codec.encode(name, SAMPLES[name])
    assert codec.framing == "single-object"
    assert payload[:10] == default_schemas()[name].single_object_header
    assert codec.decode(payload) == (name, SAMPLES[name])
    assert codec.decode(bytearray(payload)) == (name, SAMPLES[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_confluent_round_trip(name: str, registry: FakeRegistry, registry_codec: AvroCodec) -> None:
    payload = registry_codec.encode(name, SAMPLES[name])
    assert registry_codec.framing == "confluent"
    subject = subject_name(TOPIC, name)
    assert subject == f"trace.chain.10143.blocks-{name}"
    [schema_id] = registry.subjects[subject]
    assert payload[:5] == b"\x00" + schema_id.to_bytes(4, "big")
    assert json.loads(registry.schemas[schema_id]) == default_schemas()[name].schema
    assert registry_codec.decode(payload) == (name, SAMPLES[name])
    # A fresh consumer learns the id from the registry; a codec without a registry decodes the
    # single-object framing too, and a registry codec decodes both.
    with AvroCodec(registry.url, topic=TOPIC) as consumer:
        assert consumer.decode(payload) == (name, SAMPLES[name])
    assert ("GET", f"/schemas/ids/{schema_id}", None) in registry.requests
    assert registry_codec.decode(AvroCodec().encode(name, SAMPLES[name])) == (name, SAMPLES[name])


def test_registry_requests_use_the_confluent_content_type(
    registry: FakeRegistry, registry_codec: AvroCodec
) -> None:
    ids = registry_codec.register_all()
    assert set(ids) == set(SAMPLES)
    assert len(set(ids.values())) == len(SAMPLES)
    posts = [r for r in registry.requests if r[0] == "POST"]
    assert len(posts) == len(SAMPLES)
    assert {r[2] for r in posts} == {"application/vnd.schemaregistry.v1+json"}
    registry_codec.encode(BLOCK, SAMPLES[BLOCK])
    assert len([r for r in registry.requests if r[0] == "POST"]) == len(SAMPLES)  # ids are cached


hex32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
hex20 = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
hexdata = st.binary(max_size=200).map(lambda b: "0x" + b.hex())
uint256 = st.integers(0, 2**256 - 1).map(str)
uint64 = st.integers(0, 2**63 - 1)
int32 = st.integers(0, 2**31 - 1)

transactions = st.fixed_dictionaries(
    {
        "block_number": uint64,
        "transaction_index": int32,
        "transaction_hash": hex32,
        "nonce": uint256,
        "from_address": hex20,
        "to_address": st.none() | hex20,
        "value": uint256,
        "input": hexdata,
        "gas_limit": uint256,
        "gas_price": st.none() | uint256,
        "max_fee_per_gas": st.none() | uint256,
        "max_priority_fee_per_gas": st.none() | uint256,
        "gas_used": st.none() | uint256,
        "effective_gas_price": st.none() | uint256,
        "success": st.none() | st.booleans(),
        "transaction_type": st.none() | st.integers(0, 255),
        "contract_address": st.none() | hex20,
    }
)
logs = st.fixed_dictionaries(
    {
        "block_number": uint64,
        "transaction_index": int32,
        "log_index": int32,
        "transaction_hash": hex32,
        "address": hex20,
        "topic0": st.none() | hex32,
        "topic1": st.none() | hex32,
        "topic2": st.none() | hex32,
        "topic3": st.none() | hex32,
        "data": hexdata,
    }
)
blocks = st.fixed_dictionaries(
    {
        "chain_id": uint64,
        "block_number": uint64,
        "block_hash": hex32,
        "parent_hash": hex32,
        "timestamp": uint64,
        "author": st.none() | hex20,
        "gas_used": uint256,
        "gas_limit": uint256,
        "base_fee_per_gas": st.none() | uint256,
        "extra_data": st.none() | hexdata,
        "observed_at_ms": uint64,
        "idempotency_key": st.text(max_size=80),
        "transactions": st.lists(transactions, max_size=8),
        "logs": st.lists(logs, max_size=8),
    }
)


@settings(max_examples=150, deadline=None)
@given(datum=blocks)
def test_generated_blocks_round_trip(datum: dict[str, Any]) -> None:
    codec = AvroCodec()
    assert codec.decode(codec.encode(BLOCK, datum)) == (BLOCK, datum)


def test_a_100_tx_200_log_block_encodes_and_decodes_quickly() -> None:
    codec = AvroCodec()
    datum = block(100, 200)
    payload = codec.encode(BLOCK, datum)
    assert codec.decode(payload) == (BLOCK, datum)
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        codec.decode(codec.encode(BLOCK, datum))
    per_round_trip = (time.perf_counter() - start) / rounds
    # A regression guard, not a benchmark: ~3 ms on a 2-vCPU Xeon (fastavro's per-field cost).
    assert per_round_trip < 0.03, f"{per_round_trip * 1e3:.2f} ms per encode+decode"


# -- malformed input ------------------------------------------------------------------------------


def _zigzag(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _malformed_cases() -> list[tuple[str, bytes, str]]:
    codec = AvroCodec()
    good = codec.encode(BLOCK, SAMPLES[BLOCK])
    log_header = default_schemas()[LOG].single_object_header
    bad_utf8 = log_header + _zigzag(1) + _zigzag(0) + _zigzag(0) + _zigzag(2) + b"\xff\xfe" + b"\x00" * 40
    bad_union = log_header + _zigzag(1) + _zigzag(0) + _zigzag(0) + (_zigzag(1) + b"a") * 2 + _zigzag(7)
    return [
        ("empty", b"", "empty message"),
        ("one magic byte", b"\xc3", "truncated single-object header: 1 bytes"),
        ("short single-object header", good[:6], "truncated single-object header: 6 bytes"),
        ("short confluent header", b"\x00\x00\x01", "truncated Confluent header: 3 bytes"),
        ("unknown magic", b"\x01abc", "unknown magic byte(s) 0x0161"),
        ("bad second magic byte", b"\xc3\x02" + good[2:], "unknown magic byte(s) 0xc302"),
        (
            "unknown fingerprint",
            b"\xc3\x01" + bytes(range(8)) + good[10:],
            "unknown schema fingerprint 0x0706",
        ),
        ("header only", good[:10], "header only, no body"),
        ("truncated body", good[:-7], "truncated trace.chain.Block body"),
        ("trailing garbage", good + b"\x00\x01", "2 trailing byte(s) after the trace.chain.Block body"),
        ("invalid utf-8", bad_utf8, "malformed trace.chain.Log body"),
        ("bad union index", bad_union, "malformed trace.chain.Log body"),
        (
            "unknown id, no registry",
            b"\x00\x00\x00\x03\xe7" + good[10:],
            "unknown schema id 999: no schema registry",
        ),
    ]


@pytest.mark.parametrize(
    ("payload", "message"), [c[1:] for c in _malformed_cases()], ids=[c[0] for c in _malformed_cases()]
)
def test_malformed_payloads_raise_decode_error_naming_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        AvroCodec().decode(payload)
    assert message in str(caught.value)


def test_unknown_registry_id_raises_decode_error(registry: FakeRegistry, registry_codec: AvroCodec) -> None:
    body = AvroCodec().encode(LOG, SAMPLES[LOG])[10:]
    for _ in range(2):  # the second time comes from the codec's negative cache
        with pytest.raises(DecodeError, match="unknown schema id 4242: the registry does not know it"):
            registry_codec.decode(b"\x00" + (4242).to_bytes(4, "big") + body)
    assert registry.requests.count(("GET", "/schemas/ids/4242", None)) == 1


def test_older_writer_schema_from_the_registry_is_resolved(registry: FakeRegistry) -> None:
    current = default_schemas()[LOG].schema
    old = copy.deepcopy(current)
    old["fields"] = [f for f in old["fields"] if f["name"] != "topic3"]  # a later-added, defaulted field
    old_id = registry.add(subject_name(TOPIC, LOG), json.dumps(old))
    datum = {k: v for k, v in SAMPLES[LOG].items() if k != "topic3"}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(old), datum)
    with AvroCodec(registry.url, topic=TOPIC) as codec:
        assert codec.decode(b"\x00" + old_id.to_bytes(4, "big") + out.getvalue()) == (
            LOG,
            {**datum, "topic3": None},
        )
        broken = copy.deepcopy(current)
        broken["fields"] = [f for f in broken["fields"] if f["name"] != "data"]
        broken_id = registry.add("elsewhere", json.dumps(broken))
        with pytest.raises(DecodeError, match=r"trace\.chain\.Log\.data: field is missing from the writer"):
            codec.decode(b"\x00" + broken_id.to_bytes(4, "big") + out.getvalue())


# -- encode errors and registry failures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["transactions"][1].pop("value"),
            "trace.chain.Block.transactions[1].value: required field is missing",
        ),
        (
            lambda d: d["logs"][2].update(log_index="7"),
            "trace.chain.Block.logs[2].log_index: expected int, got str",
        ),
        (
            lambda d: d.update(author=5),
            "trace.chain.Block.author: 5 matches no branch of union [null, string]",
        ),
        (
            lambda d: d.update(block_number=2**64),
            "trace.chain.Block.block_number: 18446744073709551616 is out of range",
        ),
        (
            lambda d: d["logs"][0].update(block_hash="0x"),
            "trace.chain.Block.logs[0]: unexpected field(s) block_hash",
        ),
        (
            lambda d: d.update(transactions=None),
            "trace.chain.Block.transactions: expected an array, got NoneType",
        ),
    ],
)
def test_encode_errors_name_the_field(mutate: Any, message: str) -> None:
    datum = copy.deepcopy(SAMPLES[BLOCK])
    mutate(datum)
    with pytest.raises(SchemaError) as caught:
        AvroCodec().encode(BLOCK, datum)
    assert str(caught.value).startswith(f"cannot encode {message}"), str(caught.value)


def test_optional_fields_may_be_omitted_and_unknown_records_are_refused() -> None:
    codec = AvroCodec()
    datum = {k: v for k, v in SAMPLES[LOG].items() if k not in ("topic2", "topic3")}
    assert codec.decode(codec.encode(LOG, datum))[1] == {**datum, "topic2": None, "topic3": None}
    with pytest.raises(SchemaError, match=r"unknown record type 'trace\.chain\.Nope'"):
        codec.encode("trace.chain.Nope", {})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_registry_is_retryable() -> None:
    with AvroCodec(f"http://127.0.0.1:{_closed_port()}", topic=TOPIC) as codec:
        with pytest.raises(RegistryUnavailable, match="unreachable") as caught:
            codec.encode(REORG, SAMPLES[REORG])
        assert isinstance(caught.value, RetryableError)
        with pytest.raises(RetryableError):
            codec.decode(b"\x00\x00\x00\x00\x01" + b"\x00")


@pytest.mark.parametrize(
    ("status", "error"), [(500, RegistryUnavailable), (429, RegistryUnavailable), (409, IncompatibleSchema)]
)
def test_registry_errors_are_mapped(registry: FakeRegistry, status: int, error: type[Exception]) -> None:
    registry.fail_with = status
    with (
        SchemaRegistryClient(registry.url) as client,
        pytest.raises(error, match=f"HTTP {status}|incompatible"),
    ):
        client.register(subject_name(TOPIC, BLOCK), default_schemas()[BLOCK].schema_json)
