"""Which blocks a query can need of each view: the block-number bounds its WHERE clauses imply,
pushed down to the hot read (Postgres) and to the cold files (their statistics). Pure; no I/O.

Only what is certain is used: in each SELECT, the conjuncts of its WHERE that compare a view's
``block_number`` with an integer literal (``=``, ``<``, ``<=``, ``>``, ``>=``, ``BETWEEN``, either
side), the column qualified by the view's alias or, in a SELECT reading one view, unqualified. A
view read in a SELECT without such a conjunct, or read twice with different bounds, needs the
union of what each reading needs: anything unbounded makes it unbounded. Reading more rows than
needed never changes a result (the query's own WHERE still filters them); reading fewer would, so
an OR, a NOT, a parameter or a subquery bounds nothing.

A WHERE conjunct holds for the outer joins too: a row of the null-supplying side filtered out by
it would only have made a null-extended row the same WHERE removes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import sqlglot.expressions as exp

BLOCK = "block_number"
Range = tuple[int | None, int | None]  # inclusive; None: unbounded on that side
EVERYTHING: Range = (None, None)


@dataclass(frozen=True, slots=True)
class _Bound:
    low: int | None = None
    high: int | None = None

    def meet(self, other: _Bound) -> _Bound:
        lows = [b for b in (self.low, other.low) if b is not None]
        highs = [b for b in (self.high, other.high) if b is not None]
        return _Bound(max(lows) if lows else None, min(highs) if highs else None)


def block_bounds(tree: exp.Expression, views: Collection[str]) -> dict[str, Range]:
    """For each of ``views`` the query reads, the block range it can need (``EVERYTHING`` when
    unbounded). Table names compare case-insensitively; CTEs shadow views of their name."""
    wanted = {v.lower() for v in views}
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    found: dict[str, list[_Bound]] = {}
    for select in tree.find_all(exp.Select):
        tables = [t for t in _own_tables(select) if t.name.lower() in wanted and t.name.lower() not in ctes]
        if not tables:
            continue
        conjuncts = list(_conjuncts(select.args.get("where")))
        only = len(list(_sources(select))) == 1  # an unqualified column is this view's
        for table in tables:
            alias = (table.alias_or_name or table.name).lower()
            bound = _Bound()
            for conjunct in conjuncts:
                bound = bound.meet(_bound_of(conjunct, alias, only=only))
            found.setdefault(table.name.lower(), []).append(bound)
    return {view: _union(bounds) for view, bounds in found.items()}


def _sources(select: exp.Select) -> Iterator[exp.Expression]:
    """What this SELECT's own FROM and JOINs read: tables, subqueries, functions."""
    for source in [select.args.get("from_") or select.args.get("from"), *(select.args.get("joins") or [])]:
        if source is not None:
            yield source.this


def _own_tables(select: exp.Select) -> Iterator[exp.Table]:
    """The tables in this SELECT's own FROM and JOINs (not those of nested SELECTs)."""
    for source in _sources(select):
        if isinstance(source, exp.Table):
            yield source


def _conjuncts(where: exp.Expression | None) -> Iterator[exp.Expression]:
    if where is None:
        return
    node = where.this if isinstance(where, exp.Where) else where
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, exp.And):
            stack.extend([item.this, item.expression])
        elif isinstance(item, exp.Paren):
            stack.append(item.this)
        else:
            yield item


def _is_block(node: exp.Expression, alias: str, *, only: bool) -> bool:
    if not isinstance(node, exp.Column) or node.name.lower() != BLOCK:
        return False
    qualifier = node.table.lower() if node.table else ""
    return qualifier == alias or (not qualifier and only)


def _int(node: exp.Expression) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Neg):
        inner = _int(node.this)
        return None if inner is None else -inner
    return None


_FLIP: dict[type[exp.Expression], type[exp.Expression]] = {
    exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}


def _bound_of(conjunct: exp.Expression, alias: str, *, only: bool) -> _Bound:
    if isinstance(conjunct, exp.Between) and _is_block(conjunct.this, alias, only=only):
        low, high = _int(conjunct.args["low"]), _int(conjunct.args["high"])
        return _Bound(low, high) if low is not None and high is not None else _Bound()
    kind = type(conjunct)
    if kind not in _FLIP:
        return _Bound()
    left, right = conjunct.this, conjunct.expression
    if _is_block(right, alias, only=only) and _int(left) is not None:
        left, right, kind = right, left, _FLIP[kind]
    value = _int(right)
    if not _is_block(left, alias, only=only) or value is None:
        return _Bound()
    made: dict[type[exp.Expression], _Bound] = {
        exp.EQ: _Bound(value, value), exp.GT: _Bound(value + 1, None), exp.GTE: _Bound(value, None),
        exp.LT: _Bound(None, value - 1), exp.LTE: _Bound(None, value)}
    return made[kind]


def _union(bounds: list[_Bound]) -> Range:
    if any(b.low is None for b in bounds):
        low = None
    else:
        low = min(b.low for b in bounds if b.low is not None)
    if any(b.high is None for b in bounds):
        high = None
    else:
        high = max(b.high for b in bounds if b.high is not None)
    return low, high
