"""Postgres state of the deliveries: intake inserts, the sender's claim and its outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.rows
from psycopg.types.json import Jsonb

from operators.alert_route.logic import Decision


@dataclass(frozen=True)
class NewDelivery:
    delivery_id: str
    alert_id: str
    kind: str
    route: str
    channel: str
    target: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt (``attempt`` is 1-based, already recorded as started)."""

    delivery_id: str
    alert_id: str
    kind: str
    route: str
    channel: str
    target: str
    payload: dict[str, Any]
    attempt: int


Conn = psycopg.Connection[Any]


def insert_deliveries(conn: Conn, rows: Sequence[NewDelivery]) -> int:
    """Insert ``rows`` in one transaction; an existing ``delivery_id`` is left as it is. Returns new rows."""
    if not rows:
        return 0
    new = 0
    with conn.transaction(), conn.cursor() as cur:
        for row in rows:
            cur.execute(
                "INSERT INTO state.alert_deliveries"
                " (delivery_id, alert_id, kind, route, channel, target, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (delivery_id) DO NOTHING",
                (row.delivery_id, row.alert_id, row.kind, row.route, row.channel, row.target,
                 Jsonb(row.payload)),
            )
            new += cur.rowcount
    return new


_CLAIM = (
    "SELECT delivery_id, alert_id, kind, route, channel, target, payload, attempts"
    " FROM state.alert_deliveries WHERE status = 'pending' AND next_attempt_at <= now()"
    " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)


@dataclass(frozen=True)
class GaveUp:
    """A due delivery whose attempts were already spent (its last one interrupted): now dead."""

    delivery_id: str
    route: str
    error: str


def claim(conn: Conn, limits: Mapping[str, tuple[int, float]],
          default: tuple[int, float] = (1, 30.0)) -> Claimed | GaveUp | None:
    """Claim one due delivery and record its attempt as started, in one transaction.

    The row's ``next_attempt_at`` moves ``lease_s`` ahead, so a process dying mid-call leaves the
    attempt visible (``finished_at`` NULL, then ``interrupted``) and the delivery due again later.
    A delivery whose attempts are spent (its last one interrupted) is marked dead instead and
    :class:`GaveUp` returned. ``limits`` maps a route to ``(max_attempts, lease_s)``.
    """
    with conn.transaction(), conn.cursor() as cur:
        row = cur.execute(_CLAIM).fetchone()
        if row is None:
            return None
        did, alert_id, kind, route, channel, target, payload, attempts = row
        cur.execute(
            "UPDATE state.alert_delivery_attempts SET finished_at = now(), outcome = 'interrupted',"
            " error = 'the process stopped during the attempt'"
            " WHERE delivery_id = %s AND finished_at IS NULL",
            (did,),
        )
        interrupted = cur.rowcount
        max_attempts, lease_s = limits.get(route, default)
        if attempts >= max_attempts:
            error = (f"{attempts} attempt(s) spent; the last one was interrupted" if interrupted
                     else f"{attempts} attempt(s) spent")
            cur.execute(
                "UPDATE state.alert_deliveries SET status = 'dead', last_error = %s WHERE delivery_id = %s",
                (error, did),
            )
            return GaveUp(did, route, error)
        attempt = attempts + 1
        cur.execute(
            "UPDATE state.alert_deliveries SET attempts = %s,"
            " next_attempt_at = now() + make_interval(secs => %s) WHERE delivery_id = %s",
            (attempt, lease_s, did),
        )
        cur.execute(
            "INSERT INTO state.alert_delivery_attempts (delivery_id, attempt) VALUES (%s, %s)"
            " ON CONFLICT (delivery_id, attempt) DO NOTHING",
            (did, attempt),
        )
        return Claimed(did, alert_id, kind, route, channel, target, payload, attempt)


def finish(conn: Conn, claimed: Claimed, outcome: str, http_status: int | None, error: str | None,
           decision: Decision) -> bool:
    """Record the attempt's outcome and the delivery's next state; False if another claim overtook it."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE state.alert_delivery_attempts SET finished_at = now(), outcome = %s, http_status = %s,"
            " error = %s WHERE delivery_id = %s AND attempt = %s",
            (outcome, http_status, error, claimed.delivery_id, claimed.attempt),
        )
        if decision.status == "delivered":
            cur.execute(
                "UPDATE state.alert_deliveries SET status = 'delivered', delivered_at = now(),"
                " last_error = NULL WHERE delivery_id = %s AND status <> 'delivered'",
                (claimed.delivery_id,),
            )
        elif decision.status == "dead":
            cur.execute(
                "UPDATE state.alert_deliveries SET status = 'dead', last_error = %s"
                " WHERE delivery_id = %s AND status = 'pending' AND attempts = %s",
                (error, claimed.delivery_id, claimed.attempt),
            )
        else:
            cur.execute(
                "UPDATE state.alert_deliveries SET last_error = %s,"
                " next_attempt_at = now() + make_interval(secs => %s)"
                " WHERE delivery_id = %s AND status = 'pending' AND attempts = %s",
                (error, decision.retry_in_s or 0.0, claimed.delivery_id, claimed.attempt),
            )
        return cur.rowcount == 1


def deliveries(conn: Conn, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Most recent deliveries (optionally of one status), newest first."""
    sql = (
        "SELECT delivery_id, alert_id, kind, route, channel, target, status, attempts, next_attempt_at,"
        " last_error, created_at, delivered_at FROM state.alert_deliveries"
    )
    params: list[Any] = []
    if status:
        sql += " WHERE status = %s"
        params.append(status)
    sql += " ORDER BY created_at DESC, delivery_id LIMIT %s"
    params.append(limit)
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return list(cur.execute(sql, params).fetchall())
