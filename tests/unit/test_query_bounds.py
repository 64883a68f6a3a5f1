"""Block bounds pushed down from a query's WHERE clauses (dispatcher/query/bounds.py)."""

from __future__ import annotations

import pytest
import sqlglot

from dispatcher.query.bounds import EVERYTHING, block_bounds

VIEWS = ("blocks", "transactions", "logs", "transfers")


def bounds(sql: str) -> dict[str, tuple[int | None, int | None]]:
    return block_bounds(sqlglot.parse_one(sql, read="duckdb"), VIEWS)


@pytest.mark.parametrize(("sql", "expected"), [
    ("select * from blocks", {"blocks": EVERYTHING}),
    ("select * from blocks where block_number > 100", {"blocks": (101, None)}),
    ("select * from blocks where block_number >= 100 and block_number < 200", {"blocks": (100, 199)}),
    ("select * from blocks where 100 <= block_number and 200 >= block_number", {"blocks": (100, 200)}),
    ("select * from blocks where block_number between 5 and 9 and gas_used > 3", {"blocks": (5, 9)}),
    ("select * from blocks where block_number = 7", {"blocks": (7, 7)}),
    ("select * from blocks where (block_number > 5 and (block_number < 9))", {"blocks": (6, 8)}),
    ("select * from blocks where block_number > -1", {"blocks": (0, None)}),
    # an OR, a NOT, a parameter, a subquery or another column bound nothing
    ("select * from blocks where block_number > 5 or block_number < 2", {"blocks": EVERYTHING}),
    ("select * from blocks where not block_number < 5", {"blocks": EVERYTHING}),
    ("select * from blocks where block_number > $first", {"blocks": EVERYTHING}),
    ("select * from blocks where block_number > (select max(block_number) - 10 from blocks)",
     {"blocks": EVERYTHING}),
    ("select * from blocks where gas_used > 5", {"blocks": EVERYTHING}),
    ("select * from blocks where block_number > 5.5", {"blocks": EVERYTHING}),
    ("select * from blocks where block_number > '5'", {"blocks": EVERYTHING}),
])
def test_one_view(sql: str, expected: dict[str, tuple[int | None, int | None]]) -> None:
    assert bounds(sql) == expected


def test_joins_bound_each_view_by_its_own_alias() -> None:
    sql = ("select * from blocks b join transactions t on t.block_number = b.block_number "
           "where b.block_number >= 10 and t.block_number <= 20")
    assert bounds(sql) == {"blocks": (10, None), "transactions": (None, 20)}
    # unqualified with two sources: whose column it is is not certain
    sql = "select * from blocks b join logs l using (block_number) where block_number > 10"
    assert bounds(sql) == {"blocks": EVERYTHING, "logs": EVERYTHING}
    sql = ("select * from blocks left join logs on logs.block_number = blocks.block_number "
           "where logs.block_number > 3")
    assert bounds(sql) == {"blocks": EVERYTHING, "logs": (4, None)}


def test_a_view_read_twice_needs_the_union() -> None:
    sql = ("select * from (select * from blocks where block_number < 10) a union all "
           "select * from blocks where block_number > 100")
    assert bounds(sql) == {"blocks": EVERYTHING}
    sql = ("select * from (select * from blocks where block_number between 1 and 5) a, "
           "(select * from blocks where block_number between 8 and 9) b")
    assert bounds(sql) == {"blocks": (1, 9)}


def test_ctes_shadow_views_and_their_columns_are_not_a_views() -> None:
    sql = ("with blocks as (select 1 as block_number) select * from blocks where block_number > 5")
    assert bounds(sql) == {}
    sql = ("with recent as (select * from transfers where block_number >= 50) "
           "select * from recent r join blocks b on b.block_number = r.block_number where block_number > 60")
    assert bounds(sql) == {"transfers": (50, None), "blocks": EVERYTHING}
