"""BACKWARD compatibility: the checker's rules, then the repository's contracts against git history.

The repository test takes, for every ``schemas/avro/*.avsc``, the newest committed version that
differs from the working tree (expanded with the sibling files of that same commit) and requires
the current schema to read it: by :func:`backward_problems` and by actually writing a generated
datum with the old schema and reading it with the new one through fastavro's schema resolution.
A file with no differing committed version is checked against itself. Without git history the
test fails: a silently skipped contract check would let an incompatible change through.
"""

from __future__ import annotations

import copy
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import fastavro.utils
import pytest

from tracekit.avro.compat import backward_problems, is_backward_compatible
from tracekit.avro.schemas import default_schemas, expand_files, read_schema_files
from tracekit.names import BLOCK

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = "schemas/avro"


def record(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


# -- (a) the rules on synthetic pairs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "reader", "problems"),
    [
        pytest.param(
            record(f("a", "int")),
            record(f("a", "int"), f("b", "string", default="")),
            [],
            id="add-with-default",
        ),
        pytest.param(
            record(f("a", "int")),
            record(f("a", "int"), f("b", "string")),
            ["t.R.b: field is missing from the writer schema and has no default"],
            id="add-without-default",
        ),
        pytest.param(record(f("a", "int"), f("b", "string")), record(f("a", "int")), [], id="remove-field"),
        pytest.param(record(f("a", "int")), record(f("a", "long")), [], id="int-to-long"),
        pytest.param(record(f("a", "long")), record(f("a", "double")), [], id="long-to-double"),
        pytest.param(record(f("a", "float")), record(f("a", "double")), [], id="float-to-double"),
        pytest.param(record(f("a", "string")), record(f("a", "bytes")), [], id="string-to-bytes"),
        pytest.param(record(f("a", "bytes")), record(f("a", {"type": "string"})), [], id="bytes-to-string"),
        pytest.param(
            record(f("a", "long")),
            record(f("a", "int")),
            ["t.R.a: type changed from long to int"],
            id="long-to-int",
        ),
        pytest.param(
            record(f("a", "double")),
            record(f("a", "float")),
            ["t.R.a: type changed from double to float"],
            id="narrow",
        ),
        pytest.param(
            record(f("a", ["null", "int"])),
            record(f("a", ["null", "int", "string"])),
            [],
            id="union-widening",
        ),
        pytest.param(
            record(f("a", ["null", "int"])), record(f("a", ["null", "long"])), [], id="union-promotion"
        ),
        pytest.param(record(f("a", "int")), record(f("a", ["null", "long"])), [], id="value-into-union"),
        pytest.param(
            record(f("a", ["null", "int", "string"])),
            record(f("a", ["null", "int"])),
            ["t.R.a: writer union branch string cannot be read by any branch of the reader's [null, int]"],
            id="union-narrowing",
        ),
        pytest.param(
            record(f("a", ["null", "string"])),
            record(f("a", "string")),
            ["t.R.a: type changed from [null, string] to string (writer union branch null cannot be read)"],
            id="union-to-value",
        ),
        pytest.param(
            record(f("a", "boolean")),
            record(f("a", ["null", "string"])),
            [
                "t.R.a: type changed from boolean to [null, string] "
                "(no branch of the reader's union can read boolean)"
            ],
            id="value-into-wrong-union",
        ),
        pytest.param(
            record(f("e", {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]})),
            record(f("e", {"type": "enum", "name": "E", "symbols": ["A", "C"]})),
            ["t.R.e: enum symbol(s) B removed and the reader enum has no default"],
            id="enum-symbol-removed",
        ),
        pytest.param(
            record(f("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]})),
            record(f("e", {"type": "enum", "name": "E", "symbols": ["A", "Z"], "default": "Z"})),
            [],
            id="enum-symbol-removed-with-default",
        ),
        pytest.param(
            record(f("e", {"type": "enum", "name": "E", "symbols": ["A"]})),
            record(f("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]})),
            [],
            id="enum-symbol-added",
        ),
        pytest.param(
            record(f("x", {"type": "fixed", "name": "F", "size": 16})),
            record(f("x", {"type": "fixed", "name": "F", "size": 32})),
            ["t.R.x: fixed t.F size changed from 16 to 32"],
            id="fixed-size",
        ),
        pytest.param(
            record(f("a", "int")),
            record(f("a", "int"), name="S"),
            ["t.S: record name changed from t.R to t.S"],
            id="rename",
        ),
        pytest.param(
            record(f("a", "int")), record(f("a", "int"), name="S", aliases=["R"]), [], id="rename-with-alias"
        ),
        pytest.param(record(f("a", "int")), record(f("b", "int", aliases=["a"])), [], id="field-alias"),
        pytest.param(
            record(f("m", {"type": "map", "values": "string"})),
            record(f("m", {"type": "map", "values": "int"})),
            ["t.R.m{}: type changed from string to int"],
            id="map-values",
        ),
        pytest.param(
            record(f("xs", {"type": "array", "items": "long"})),
            record(f("xs", {"type": "map", "values": "long"})),
            ["t.R.xs: type changed from array<long> to map<long>"],
            id="array-to-map",
        ),
    ],
)
def test_backward_rules(writer: dict[str, Any], reader: dict[str, Any], problems: list[str]) -> None:
    assert backward_problems(reader, writer) == problems
    assert is_backward_compatible(reader, writer) is (not problems)


def test_problem_paths_go_through_arrays_of_referenced_records() -> None:
    current = default_schemas()[BLOCK].schema
    changed = copy.deepcopy(current)
    tx = changed["fields"][[fld["name"] for fld in changed["fields"]].index("transactions")]["type"]["items"]
    next(fld for fld in tx["fields"] if fld["name"] == "value")["type"] = "int"
    assert backward_problems(changed, current) == [
        "trace.chain.Block.transactions[].value: type changed from string to int"
    ]
    assert backward_problems(current, current) == []


def test_named_references_and_recursive_types() -> None:
    node = record(f("value", "long"), f("next", ["null", "R"]))
    assert backward_problems(node, node) == []
    point = {"type": "record", "name": "P", "fields": [f("x", "int")]}
    writer = record(f("a", point), f("b", "P"))
    reader = record(f("a", {**point, "fields": [f("x", "long")]}), f("b", "P"))
    assert backward_problems(reader, writer) == []
    assert backward_problems(writer, reader) == [
        "t.R.a.x: type changed from long to int",
        "t.R.b.x: type changed from long to int",
    ]


# -- (b) the repository's contracts against their previous committed versions ---------------------


CONTRACT_FILES = sorted(p.name for p in (REPO / SCHEMA_DIR).glob("*.avsc"))


class _GitFailed(Exception):
    pass


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"no git history available: cannot run git ({exc}); the contract check needs it")
    if done.returncode != 0:
        raise _GitFailed(done.stderr.strip())
    return done.stdout


def require_history(repo: Path) -> None:
    """Fail (never skip) when ``repo`` has no usable git history."""
    try:
        _git(repo, "rev-parse", "--verify", "HEAD^{commit}")
        shallow = _git(repo, "rev-parse", "--is-shallow-repository").strip() == "true"
    except _GitFailed as exc:
        pytest.fail(
            f"no git history available at {repo} ({exc}): the Avro contract compatibility check "
            "compares schemas/avro with its committed versions and cannot run without them"
        )
    if shallow:
        pytest.fail(f"no git history available at {repo}: it is a shallow clone (git fetch --unshallow)")


def previous_version(repo: Path, path: str) -> tuple[str, dict[str, Any]] | None:
    """The newest commit whose ``path`` differs from the working tree, with that commit's schema files."""
    current = json.loads((repo / path).read_text(encoding="utf-8"))
    for commit in _git(repo, "log", "--format=%H", "--", path).split():
        try:
            old = json.loads(_git(repo, "show", f"{commit}:{path}"))
        except _GitFailed:
            continue  # the commit deleted the file
        if old == current:
            continue
        listing = _git(repo, "ls-tree", "--name-only", commit, f"{SCHEMA_DIR}/").split()
        files = {
            Path(name).name: json.loads(_git(repo, "show", f"{commit}:{name}"))
            for name in listing
            if name.endswith(".avsc")
        }
        return commit, files
    return None


def _expanded(files: dict[str, Any], file_name: str) -> dict[str, Any]:
    [schema] = [schema for source, schema in expand_files(files).values() if source == file_name]
    return schema


def contract_problems(file_name: str, old_files: dict[str, Any], new_files: dict[str, Any]) -> list[str]:
    """Compatibility problems, then a real write-old/read-new round trip of generated data."""
    old, new = _expanded(old_files, file_name), _expanded(new_files, file_name)
    problems = backward_problems(new, old)
    if problems:
        return problems
    old_parsed, new_parsed = fastavro.parse_schema(old), fastavro.parse_schema(new)
    old_fields = {fld["name"]: fld for fld in old["fields"]}
    for datum in fastavro.utils.generate_many(old_parsed, 5):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, old_parsed, datum)
        buf.seek(0)
        read = fastavro.schemaless_reader(buf, old_parsed, new_parsed)
        assert isinstance(read, dict) and isinstance(datum, dict)
        assert buf.tell() == len(buf.getvalue()), f"{file_name}: the new schema left bytes unread"
        for fld in new["fields"]:
            if fld["name"] not in old_fields:
                assert read[fld["name"]] == fld["default"], f"{file_name}: {fld['name']} is not its default"
            elif old_fields[fld["name"]]["type"] == fld["type"]:
                assert read[fld["name"]] == datum[fld["name"]], f"{file_name}: {fld['name']} changed"
    return []


def test_the_contract_directory_is_not_empty() -> None:
    assert CONTRACT_FILES, f"no .avsc files in {REPO / SCHEMA_DIR}"


@pytest.mark.parametrize("file_name", CONTRACT_FILES)
def test_contract_is_backward_compatible_with_its_previous_committed_version(file_name: str) -> None:
    require_history(REPO)
    current_files = read_schema_files(REPO / SCHEMA_DIR)
    previous = previous_version(REPO, f"{SCHEMA_DIR}/{file_name}")
    if previous is None:  # never committed, or unchanged since: the check against itself
        against, old_files = "itself (no earlier committed version differs)", current_files
    else:
        against, old_files = f"its version at {previous[0][:12]}", previous[1]
    problems = contract_problems(file_name, old_files, current_files)
    assert not problems, f"{file_name} is not backward compatible with {against}:\n" + "\n".join(problems)


def test_the_history_check_catches_an_incompatible_change() -> None:
    new_files = read_schema_files(REPO / SCHEMA_DIR)
    old_files = copy.deepcopy(new_files)
    tx = old_files["transaction.avsc"]
    tx["fields"] = [fld for fld in tx["fields"] if fld["name"] != "nonce"]
    assert contract_problems("transaction.avsc", old_files, new_files) == [
        "trace.chain.Transaction.nonce: field is missing from the writer schema and has no default"
    ]
    assert contract_problems("block.avsc", old_files, new_files) == [
        "trace.chain.Block.transactions[].nonce: field is missing from the writer schema and has no default"
    ]
    assert contract_problems("transaction.avsc", new_files, old_files) == []  # dropping a field is fine


def test_missing_history_fails_instead_of_skipping(tmp_path: Path) -> None:
    lone = tmp_path / "not-a-repo"
    lone.mkdir()
    (lone / ".git").write_text("gitdir: /nonexistent\n")  # never a valid repository, wherever tmp is
    with pytest.raises(pytest.fail.Exception, match="no git history available"):
        require_history(lone)
