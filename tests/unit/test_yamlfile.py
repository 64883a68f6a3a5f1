"""The kernel's YAML with line numbers: values, the line of every location, issues, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from tracekit.errors import ConfigError
from tracekit.yamlfile import Loc, YamlError, load_yaml, read_yaml, yaml_files

TEXT = textwrap.dedent("""\
    name: demo
    jobs:
      - id: a
        limits:
          max: 3
      - id: b
        tags: [x,
               y]
    empty:
    """)


def test_values_are_plain_and_every_location_has_its_lines() -> None:
    doc = load_yaml(TEXT, "f.yaml")
    assert doc.data == {"name": "demo", "jobs": [{"id": "a", "limits": {"max": 3}},
                                                 {"id": "b", "tags": ["x", "y"]}], "empty": None}
    assert type(doc.data) is dict and type(doc.data["jobs"]) is list
    assert doc.line(()) == 1
    assert doc.line(("jobs",)) == 2  # the key
    assert doc.value_line(("jobs",)) == 3  # where the list starts
    assert doc.line(("jobs", 0)) == 3 and doc.line(("jobs", 1)) == 6  # the items
    assert doc.line(("jobs", 0, "limits")) == 4
    assert doc.value_line(("jobs", 0, "limits")) == 5  # the nested mapping starts at its first key
    assert doc.line(("jobs", 0, "limits", "max")) == 5
    assert doc.line(("jobs", 1, "tags", 1)) == 8  # a flow sequence's items too
    assert doc.line(("empty",)) == 9
    assert doc.issues == () and not doc.empty
    assert doc.where(("jobs", 1, "id")) == "f.yaml:6"


def test_a_missing_location_is_at_its_nearest_ancestor() -> None:
    doc = load_yaml(TEXT, "f.yaml")
    assert doc.line(("jobs", 0, "limits", "min")) == 5 - 1  # the key naming the mapping that lacks it
    assert doc.value_line(("jobs", 0, "limits", "min")) == 5  # where that mapping starts
    assert doc.line(("jobs", 7, "id")) == 2
    assert doc.line(("nothing", "at", "all")) == 1


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max: int


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    limits: _Limits | None = None
    tags: list[str] = []


class _Doc(BaseModel):
    name: str
    jobs: list[_Job]


def _first_loc(data: Any) -> Loc:
    with pytest.raises(ValidationError) as info:
        _Doc.model_validate(data)
    return tuple(info.value.errors()[0]["loc"])


def test_a_pydantic_loc_maps_to_its_line() -> None:
    doc = load_yaml(TEXT.replace("max: 3", "max: lots"), "f.yaml")
    loc = _first_loc(doc.data)
    assert loc == ("jobs", 0, "limits", "max")
    assert doc.line(loc) == 5
    doc = load_yaml(TEXT.replace("y]", "5]"), "f.yaml")
    loc = _first_loc(doc.data)
    assert loc == ("jobs", 1, "tags", 1)
    assert doc.line(loc) == 8
    doc = load_yaml(TEXT.replace("- id: b", "- idd: b"), "f.yaml")
    assert _first_loc(doc.data) == ("jobs", 1, "id")  # missing: at the mapping that lacks it
    assert doc.value_line(_first_loc(doc.data)) == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n",
         "f.yaml:3: invalid YAML: while parsing a flow sequence: expected ',' or ']', but got ':'"
         " (it started on line 2)"),
        ("a: 1\n\tb: 2\n", "f.yaml:2: invalid YAML: while scanning for the next token: found character"
                           " '\\t' that cannot start any token"),
        ("a: 1\n---\nb: 2\n", "f.yaml:2: invalid YAML: expected a single document in the stream: but found"
                              " another document (it started on line 1)"),
        ("a: 1\nb: \x02\n", "f.yaml:2: invalid YAML: unacceptable character #x0002: special characters are"
                            " not allowed"),
    ],
)
def test_a_syntax_error_is_one_line_with_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(YamlError) as info:
        load_yaml(text, "f.yaml")
    assert str(info.value) == expected
    assert isinstance(info.value, ConfigError)


def test_structural_problems_are_issues_with_their_lines() -> None:
    doc = load_yaml("a: 1\nb:\n  c: 2\n  c: 3\n  4: x\n  ? [k]\n  : v\n", "f.yaml")
    assert doc.data == {"a": 1, "b": {"c": 2}}  # the first of duplicates; bad keys left out
    assert [(i.loc, i.line, i.message) for i in doc.issues] == [
        (("b", "c"), 4, "duplicate key 'c' (first on line 3)"),
        (("b",), 5, "a key must be a string, not 4 (quote it)"),
        (("b",), 6, "a key must be a string, not a mapping or list"),
    ]
    doc = load_yaml("a: &x\n  b: *x\n", "f.yaml")
    assert doc.data == {"a": {"b": None}}
    assert [(i.loc, i.line) for i in doc.issues] == [(("a", "b"), 2)]
    assert "alias refers to the mapping or list that contains it" in doc.issues[0].message


def test_empty_documents() -> None:
    for text in ("", "# only a comment\n", "\n\n"):
        doc = load_yaml(text, "f.yaml")
        assert doc.empty and doc.data is None and doc.line(("a",)) == 1
    doc = load_yaml("~\n", "f.yaml")
    assert not doc.empty and doc.data is None


def test_scalars_yaml_1_2_by_default_1_1_on_request_hex_stays_a_string() -> None:
    text = "flag: on\nno_: no\nday: 2024-01-01\nn: 010\nbig: 1_000\nhex: 0x00ff\nreal: true\nf: 1.5\n"
    assert load_yaml(text).data == {"flag": "on", "no_": "no", "day": "2024-01-01", "n": "010",
                                    "big": "1_000", "hex": "0x00ff", "real": True, "f": 1.5}
    old = load_yaml(text, scalars="yaml1.1").data
    assert (old["flag"], old["no_"], old["n"], old["big"], old["hex"], old["real"]) == (
        True, False, 8, 1000, "0x00ff", True)
    assert str(old["day"]) == "2024-01-01" and old["day"] != "2024-01-01"  # a date
    address = "0x" + "ab" * 20
    assert load_yaml(f"token: {address}\n", scalars="yaml1.1").data == {"token": address}


def test_merge_keys_own_keys_win_even_when_aliased_again() -> None:
    doc = load_yaml("base: &b {a: 1, c: 1}\nx: &m\n  <<: *b\n  a: 2\ny: *m\nz: *m\n", "f.yaml")
    assert doc.data["x"] == doc.data["y"] == doc.data["z"] == {"a": 2, "c": 1}
    assert doc.issues == ()
    assert doc.line(("x", "a")) == 4 and doc.line(("x", "c")) == 1  # a merged key: where it was written


def test_read_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text("a:\n  - 1\n", encoding="utf-8")
    doc = read_yaml(path)
    assert (doc.source, doc.text, doc.data, doc.line(("a", 0))) == (str(path), "a:\n  - 1\n", {"a": [1]}, 2)
    with pytest.raises(YamlError, match=r"^.*nope\.yaml: cannot read: No such file or directory$"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_bytes(b"a: \xff\n")
    with pytest.raises(YamlError, match=r"bad\.yaml: cannot read: 'utf-8' codec can't decode"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("a: [\n", encoding="utf-8")
    with pytest.raises(YamlError, match=r"broken\.yaml:2: invalid YAML: "):
        read_yaml(tmp_path / "broken.yaml")


_KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=6)
_SCALARS = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(),
                     st.text(alphabet="ab0x1 :-#[]{},'\"\n", max_size=8))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=20,
)


def _locations(value: Any, loc: Loc = ()) -> list[tuple[Loc, Any]]:
    found = [(loc, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        found += _locations(item, (*loc, key))
    return found


@settings(max_examples=60)
@given(_VALUES, st.sampled_from([False, True]))
def test_any_dumped_document_loads_back_with_a_line_for_each_location(value: Any, flow: bool) -> None:
    text = yaml.safe_dump({"root": value}, default_flow_style=flow)
    doc = load_yaml(text, "gen.yaml", scalars="yaml1.1")  # the schema PyYAML dumps for
    assert doc.data == {"root": value}
    assert doc.issues == ()
    total = text.count("\n") + 1
    for loc, _ in _locations(value, ("root",)):
        assert loc in doc.lines and loc in doc.value_lines
        assert 1 <= doc.line(loc) <= doc.value_line(loc) <= total


def test_yaml_files_expands_folders_and_keeps_named_files(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    for name in ("b.yml", "a.yaml", "c.yaml", "notes.txt", "d.json"):
        (folder / name).write_text("x: 1\n", encoding="utf-8")
    single = tmp_path / "z.txt"  # a file named is taken as it is, whatever its suffix
    assert yaml_files([single, folder]) == [single, folder / "a.yaml", folder / "b.yml", folder / "c.yaml"]
    assert yaml_files([tmp_path / "missing.yaml"]) == [tmp_path / "missing.yaml"]  # reading it will say
    empty = tmp_path / "empty"
    empty.mkdir()
    assert yaml_files([empty]) == []
