"""The tree's import rules (docs/layout.md), read from the code itself.

Every ``import`` counts: at module level, inside functions and under ``TYPE_CHECKING``; a lazy
import is still a dependency. Checked: the kernel imports no component; each package imports only
the packages ``docs/layout.md`` allows; there is no import cycle between packages, nor between
the modules inside one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> the first-party packages it may import (besides itself). Keep in step with docs/layout.md.
ALLOWED: dict[str, frozenset[str]] = {
    "tracekit": frozenset(),
    "devstack": frozenset({"tracekit"}),
    "operators": frozenset({"tracekit"}),
    "streams": frozenset({"tracekit"}),
    "dispatcher": frozenset({"tracekit", "operators", "streams"}),
    "tracecli": frozenset({"tracekit", "devstack", "operators", "streams", "dispatcher"}),
}
PACKAGES = frozenset(ALLOWED)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imports(path: Path, name: str) -> Iterator[str]:
    """Every first-party module ``path`` imports (the module itself when ``from M import x``
    names an attribute, ``M.x`` when ``x`` is a submodule)."""
    known = modules()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` where c is an attribute
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in PACKAGES and target != name:
                yield target


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imports(path, name)) for name, path in modules().items()}


def _cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_first_party_package_is_listed() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert on_disk == set(PACKAGES), "a new top-level package needs its row in ALLOWED and docs/layout.md"


def test_the_kernel_imports_no_component() -> None:
    bad = sorted(f"{m} -> {t}" for m, ts in graph().items() if m.split(".")[0] == "tracekit"
                 for t in ts if t.split(".")[0] != "tracekit")
    assert bad == []


def test_packages_import_only_what_the_layout_allows() -> None:
    bad = []
    for module, targets in graph().items():
        package = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                bad.append(f"{module} -> {target}")
    assert sorted(bad) == []


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for module, targets in graph().items():
        for target in targets:
            if target.split(".")[0] != module.split(".")[0]:
                edges[module.split(".")[0]].add(target.split(".")[0])
    assert _cycles({k: frozenset(v) for k, v in edges.items()}) == []


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(graph()) == []


def test_the_checker_sees_cycles_and_lazy_imports(tmp_path: Path) -> None:
    """The rules above would pass vacuously if the graph were empty or blind to imports inside
    functions: check the checker on a known cycle and on a lazy import."""
    assert _cycles({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})}) == [["a", "b", "c"]]
    assert _cycles({"a": frozenset({"b"}), "b": frozenset()}) == []
    edges = sum(len(t) for t in graph().values())
    assert edges > 200, f"only {edges} import edges found: the checker is not reading the tree"
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from tracekit.errors import TraceError\n    return TraceError\n")
    assert list(_imports(lazy, "somewhere.lazy")) == ["tracekit.errors"]


def report() -> str:
    """The figures of the layout: ``python -m tests.unit.test_layout`` prints them."""
    sizes = sorted(len(p.read_text(encoding="utf-8").splitlines()) for p in modules().values())

    def q(f: float) -> int:
        return sizes[min(len(sizes) - 1, int(f * len(sizes)))]

    kernel_out = sum(1 for m, ts in graph().items() if m.startswith("tracekit")
                     for t in ts if not t.startswith("tracekit"))
    packages: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for module, targets in graph().items():
        for target in targets:
            packages[module.split(".")[0]].add(target.split(".")[0])
    for p in packages:
        packages[p].discard(p)
    across = _cycles({k: frozenset(v) for k, v in packages.items()})
    inside = _cycles(graph())
    return "\n".join([
        f"modules: {len(sizes)}; import edges: {sum(len(t) for t in graph().values())}",
        f"kernel -> component imports: {kernel_out}",
        f"import cycles between packages: {len(across)} {across}",
        f"import cycles between modules: {len(inside)} {inside}",
        f"module lines: min {sizes[0]}, p25 {q(0.25)}, median {q(0.5)}, p75 {q(0.75)}, p90 {q(0.9)},"
        f" max {sizes[-1]}; > 500 lines: {sum(s > 500 for s in sizes)}",
    ])


if __name__ == "__main__":
    print(report())
