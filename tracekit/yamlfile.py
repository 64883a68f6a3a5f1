"""YAML configuration files with line numbers, so that every problem reads ``FILE:LINE: reason``.

:func:`load_yaml` turns YAML text into plain values (dicts with string keys, lists, scalars) and
remembers, for every location (the path of keys and indexes from the top, e.g.
``("jobs", 1, "scaling")``), the line that names it (its key, or its list item) and the line its
value starts on. :meth:`YamlDoc.line` maps a location (such a path, or a pydantic ``loc``) to the
line of its nearest ancestor in the file: a missing key is reported at the mapping that lacks it.

What the parser accepts but a configuration must not (a key that is not a string, a duplicate key,
an alias inside itself) is collected in :attr:`YamlDoc.issues` for the caller to report, all of
them or the first. A syntax error raises :class:`YamlError` (``FILE:LINE: invalid YAML: ...``).

Scalars follow YAML 1.2 (``"yaml1.2"``, the default): only ``true``/``false`` are booleans,
integers are decimal without leading zeros, and ``on``, ``no``, ``010`` or dates stay strings.
``"yaml1.1"`` is PyYAML's safe schema (``yes``/``no`` booleans, ``010`` octal, ``1_000``, dates).
In both, an unquoted ``0x...`` stays a string: in Trace a hex value is an address or a hash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from tracekit.errors import ConfigError

Loc = tuple[str | int, ...]
Scalars = Literal["yaml1.2", "yaml1.1"]


class YamlError(ConfigError):
    """The YAML file cannot be read or parsed."""


@dataclass(frozen=True, slots=True)
class YamlIssue:
    """A problem of the file's structure: ``loc`` is the mapping (for a duplicate: the key)."""

    loc: Loc
    line: int
    message: str


def nearest_line(lines: Mapping[Loc, int], loc: Sequence[str | int]) -> int:
    """The line of ``loc``, or of its nearest ancestor in ``lines``; 1 when there is none."""
    path = tuple(loc)
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1


@dataclass(frozen=True, slots=True)
class YamlDoc:
    """One YAML document as plain values, with the lines of its locations."""

    source: str  # the file's name, as errors print it
    text: str
    data: Any  # None for an empty document
    lines: Mapping[Loc, int]  # location -> the line naming it: its key, or its list item
    value_lines: Mapping[Loc, int]  # location -> the line its value starts on
    issues: tuple[YamlIssue, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the text holds no document at all (only comments or blanks)."""
        return () not in self.lines

    def line(self, loc: Sequence[str | int]) -> int:
        """The line naming ``loc`` (or its nearest ancestor in the file)."""
        return nearest_line(self.lines, loc)

    def value_line(self, loc: Sequence[str | int]) -> int:
        """The line the value at ``loc`` (or at its nearest ancestor in the file) starts on."""
        return nearest_line(self.value_lines, loc)

    def where(self, loc: Sequence[str | int]) -> str:
        """``FILE:LINE`` of ``loc``."""
        return f"{self.source}:{self.line(loc)}"


# ------------------------------------------------------------------------------ scalars


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's implicit scalars."""


_Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _regex, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"^[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)$",
     list("-+0123456789.")),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"]),
):
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_regex), _first)


class _Yaml11Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that ``0x...`` stays a string."""


def _int_or_hex(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    text = str(loader.construct_scalar(node))
    if text.lstrip("+-")[:2].lower() == "0x":
        return text
    return int(loader.construct_yaml_int(node))


_Yaml11Loader.add_constructor("tag:yaml.org,2002:int", _int_or_hex)

_LOADERS: Mapping[Scalars, type[yaml.SafeLoader]] = {"yaml1.2": _Yaml12Loader, "yaml1.1": _Yaml11Loader}


# ------------------------------------------------------------------------ nodes -> values


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Builder:
    """Plain values from composed nodes, recording each location's lines and structural issues."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.lines: dict[Loc, int] = {}
        self.value_lines: dict[Loc, int] = {}
        self.issues: list[YamlIssue] = []
        self._open: set[int] = set()
        self._split: dict[int, tuple[list[Any], list[Any]]] = {}

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.value_lines[loc] = _line(node)
        if id(node) in self._open:
            message = "an alias refers to the mapping or list that contains it"
            self.issues.append(YamlIssue(loc, self.lines.get(loc, _line(node)), message))
            return None
        if isinstance(node, yaml.MappingNode):
            self._open.add(id(node))
            try:
                return self._mapping(node, loc)
            finally:
                self._open.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self._open.add(id(node))
            try:
                out = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = _line(item)
                    out.append(self.build(item, (*loc, index)))
                return out
            finally:
                self._open.discard(id(node))
        return self.loader.construct_object(node, deep=True)

    def _entries(self, node: yaml.MappingNode) -> tuple[list[Any], list[Any]]:
        """``(merged, own)`` entries: those of merge keys (``<<``) and the node's own."""
        if id(node) not in self._split:  # flattening changes the node: once, even when aliased
            own = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)  # the merged entries first, then the node's own
            cut = len(node.value) - own
            self._split[id(node)] = (node.value[:cut], node.value[cut:])
        return self._split[id(node)]

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        merged, entries = self._entries(node)
        out: dict[str, Any] = {}
        for key_node, value_node in entries:
            line = _line(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.issues.append(YamlIssue(loc, line, "a key must be a string, not a mapping or list"))
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                self.issues.append(YamlIssue(loc, line, f"a key must be a string, not {key!r} (quote it)"))
                continue
            if key in out:
                message = f"duplicate key {key!r} (first on line {self.lines[(*loc, key)]})"
                self.issues.append(YamlIssue((*loc, key), line, message))
                continue
            self.lines[(*loc, key)] = line
            out[key] = self.build(value_node, (*loc, key))
        for key_node, value_node in reversed(merged):  # the node's own keys win, then the first merged
            key = self.loader.construct_object(key_node, deep=True)
            if isinstance(key, str) and key not in out:
                self.lines[(*loc, key)] = _line(key_node)
                out[key] = self.build(value_node, (*loc, key))
        return out


def _syntax_error(source: str, text: str, exc: yaml.YAMLError) -> YamlError:
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        line = text.count("\n", 0, exc.position) + 1
        return YamlError(f"{source}:{line}: invalid YAML: unacceptable character #x{exc.character:04x}: "
                         f"{exc.reason}")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = ": ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        if exc.context_mark is not None and exc.problem_mark is not None \
                and exc.context_mark.line != exc.problem_mark.line:
            reason += f" (it started on line {exc.context_mark.line + 1})"
        return YamlError(f"{source}:{line}: invalid YAML: {reason}")
    return YamlError(f"{source}:1: invalid YAML: {' '.join(str(exc).split())}")


def load_yaml(text: str, source: str = "<string>", *, scalars: Scalars = "yaml1.2") -> YamlDoc:
    """One YAML document of ``text`` (``source`` names it in errors); :class:`YamlError` if it
    does not parse (several documents included)."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = _LOADERS[scalars](text)  # this already rejects control characters
        node = loader.get_single_node()
        builder = _Builder(loader)
        data = None
        if node is not None:
            builder.lines[()] = _line(node)
            data = builder.build(node, ())
    except yaml.YAMLError as exc:
        raise _syntax_error(source, text, exc) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDoc(source, text, data, builder.lines, builder.value_lines, tuple(builder.issues))


def read_yaml(path: str | Path, *, scalars: Scalars = "yaml1.2") -> YamlDoc:
    """:func:`load_yaml` of the file at ``path``; :class:`YamlError` ``FILE: cannot read: ...``
    when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise YamlError(f"{path}: cannot read: {reason}") from exc
    return load_yaml(text, str(path), scalars=scalars)


def yaml_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the ``*.yaml`` / ``*.yml`` files of the folders named (each folder's
    sorted by name)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        else:
            files.append(path)
    return files
