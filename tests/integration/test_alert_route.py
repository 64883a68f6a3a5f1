"""alert_route end to end: Alert records on a topic of their own -> Postgres -> a local webhook
receiver (verifies signatures, dedupes by Idempotency-Key, can fail) and a local SMTP server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from confluent_kafka import Producer

from devstack.process import free_port
from operators.alert_route.config import load_routes
from operators.alert_route.logic import verify_signature
from operators.alert_route.service import RouteJob, run
from tracekit.avro.wire import AvroCodec
from tracekit.db import migrate
from tracekit.kafka import ensure_topics

SECRET = "it-secret"
RETRY = "retry: {base_s: 0.05, factor: 2, cap_s: 0.2, lease_grace_s: 0.5}"


# -- a webhook receiver --------------------------------------------------------------------------


@dataclass
class Receiver:
    """Records requests; acknowledges each Idempotency-Key once (later ones are duplicates)."""

    fail_first: int = 0        # per key: answer 500 this many times, then succeed
    always_status: int | None = None
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> body
    tries: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], raw: bytes) -> int:
        if self.delay_s:
            time.sleep(self.delay_s)
        key = headers.get("idempotency-key", "")
        body = json.loads(raw)
        with self.lock:
            self.requests.append({"key": key, "body": body, "headers": headers})
            if not verify_signature(SECRET, raw, headers.get("x-trace-signature", "")):
                self.bad_signatures += 1
                return 401
            self.tries[key] += 1
            if self.always_status is not None:
                return self.always_status
            if self.tries[key] <= self.fail_first:
                return 500
            self.acked.setdefault(key, body)  # dedupe: a repeat is acknowledged, not delivered again
            return 200

    def acked_alerts(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter((b["alert_id"], b["kind"]) for b in self.acked.values())


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = rec.handle({k.lower(): v for k, v in self.headers.items()}, raw)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec, f"http://127.0.0.1:{server.server_address[1]}/hooks/trace"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- topic, database, producer, job ---------------------------------------------------------------


@dataclass
class Env:
    root: Path
    database_url: str
    bootstrap: str
    topic: str
    codec: AvroCodec = field(default_factory=AvroCodec)

    def produce(self, alerts: list[dict[str, Any]]) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 1})
        for alert in alerts:
            producer.produce(self.topic, key=alert["alert_id"].encode(),
                             value=self.codec.encode("trace.alerts.Alert", alert))
        assert producer.flush(15) == 0

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def routes_file(self, text: str) -> Path:
        path = self.root / f"routes-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(text)
        return path

    def job(self, routes: Path, **over: Any) -> RouteJob:
        config, secrets = load_routes(routes, {"HOOK_SECRET": SECRET})
        params: dict[str, Any] = {"topic": self.topic, "group": f"g-{self.topic}", "poll_interval_s": 0.05,
                                  "session_timeout_ms": 6000, "restart_delay_s": 0.2}
        params.update(over)
        return RouteJob(config, secrets, self.database_url, self.bootstrap, **params)


@pytest.fixture
def env(pg_url: str, kafka_bootstrap: str, tmp_path: Path) -> Env:
    name = f"ar_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    topic = f"trace.alerts.it.{name}"
    ensure_topics(kafka_bootstrap, {topic: 1})
    return Env(tmp_path, url, kafka_bootstrap, topic)


class Running:
    def __init__(self, job: RouteJob) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(job,), daemon=True)
        self.thread.start()

    def _run(self, job: RouteJob) -> None:
        try:
            run(job, self.stop)
        except BaseException as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.errors, self.errors


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def make_alert(n: int, tag: str, **over: Any) -> dict[str, Any]:
    alert = {
        "alert_id": f"{tag}-{n:04d}", "kind": "ALERT", "rule_id": "big-transfer", "rule_version": 1,
        "tier": "INSTANT", "severity": "high", "chain_id": 10143, "block_number": 100 + n,
        "block_hash": f"0x{n:064x}", "event_key": f"ev-{n}", "event_type": "transfer",
        "summary": f"transfer {n} over the threshold", "details_json": json.dumps({"n": n}),
        "fired_at_ms": int(time.time() * 1000), "observed_at_ms": int(time.time() * 1000) - 50,
    }
    alert.update(over)
    return alert


def webhook_routes(url: str, *, max_attempts: int = 5, timeout_s: float = 2.0,
                   allow: str | None = None) -> str:
    return f"""\
allowlist: ["{allow or url.rsplit('/', 1)[0]}"]
{RETRY}
routes:
  - name: hook
    match: {{rule_ids: [big-transfer]}}
    channel: {{type: webhook, url: "{url}", secret_env: HOOK_SECRET, timeout_s: {timeout_s},
              max_attempts: {max_attempts}}}
"""


def delivered_only(env: Env) -> Callable[[], bool]:
    return lambda: env.rows("SELECT status FROM state.alert_deliveries") == [("delivered",)]


def attempts_of(env: Env, alert_id: str) -> list[tuple[Any, ...]]:
    return env.rows(
        "SELECT a.attempt, a.outcome, a.http_status, a.error, a.finished_at IS NOT NULL"
        " FROM state.alert_delivery_attempts a JOIN state.alert_deliveries d USING (delivery_id)"
        " WHERE d.alert_id = %s ORDER BY a.attempt", alert_id)


# -- tests ---------------------------------------------------------------------------------------


def test_one_acknowledged_delivery_per_alert_even_when_produced_twice(
    env: Env, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    job = env.job(env.routes_file(webhook_routes(url)))
    alerts = [make_alert(i, "dup") for i in range(20)]
    alerts.append(make_alert(0, "dup", kind="RETRACTION", summary="retracted: block 100 was reorged out"))
    ignored = make_alert(99, "dup", rule_id="other-rule")
    env.produce([*alerts, *alerts[:10], ignored])
    running = Running(job)
    try:
        want = Counter((a["alert_id"], a["kind"]) for a in alerts)
        wait_for("every alert acknowledged", lambda: rec.acked_alerts() == want)
        env.produce(alerts[5:15])  # again, after they were delivered
        time.sleep(1.5)
    finally:
        running.close()
    assert rec.acked_alerts() == want
    assert rec.bad_signatures == 0
    assert set(rec.tries.values()) == {1}, "a re-produced record must not be sent again"
    retraction = next(b for b in rec.acked.values() if b["kind"] == "RETRACTION")
    assert retraction["alert_id"] == "dup-0000" and retraction["block"]["number"] == 100
    sample = rec.requests[0]["headers"]
    assert sample["idempotency-key"] == rec.requests[0]["body"]["delivery_id"]
    assert sample["x-trace-timestamp"].isdigit()
    assert env.rows("SELECT status, count(*) FROM state.alert_deliveries GROUP BY 1") == [("delivered", 21)]
    assert env.rows("SELECT count(*), count(*) FILTER (WHERE outcome = 'ok' AND http_status = 200)"
                    " FROM state.alert_delivery_attempts") == [(21, 21)]


def test_receiver_failing_twice_then_recovering(env: Env, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.fail_first = 2
    job = env.job(env.routes_file(webhook_routes(url, max_attempts=5)))
    env.produce([make_alert(1, "flaky")])
    running = Running(job)
    try:
        wait_for("the delivery", lambda: len(rec.acked) == 1)
        wait_for("the status", delivered_only(env))
    finally:
        running.close()
    assert [(a, o, s) for a, o, s, _, _ in attempts_of(env, "flaky-0001")] == [
        (1, "http_error", 500), (2, "http_error", 500), (3, "ok", 200)]
    assert env.rows("SELECT attempts, last_error, delivered_at IS NOT NULL FROM state.alert_deliveries") == [
        (3, None, True)]
    listing = subprocess.run(
        [sys.executable, "-m", "tracecli", "alerts-route", "deliveries", "--status", "delivered"],
        env={**os.environ, "TRACE_DATABASE_URL": env.database_url, "COLUMNS": "200"},
        capture_output=True, timeout=60, check=True,
    ).stdout.decode()
    assert "flaky-0001"[:12] in listing and "delivered" in listing and "hook" in listing, listing


@pytest.mark.parametrize("failure", ["http_500", "refused"])
def test_dead_receiver_ends_dead_with_last_error(
    env: Env, receiver: tuple[Receiver, str], failure: str
) -> None:
    rec, url = receiver
    if failure == "http_500":
        rec.always_status = 500
    else:
        url = f"http://127.0.0.1:{free_port()}/hooks/trace"  # nothing listens there
    job = env.job(env.routes_file(webhook_routes(url, max_attempts=3)))
    env.produce([make_alert(1, "dead")])
    running = Running(job)
    try:
        wait_for("the dead letter",
                 lambda: env.rows("SELECT status FROM state.alert_deliveries") == [("dead",)])
    finally:
        running.close()
    attempts = attempts_of(env, "dead-0001")
    outcome = "http_error" if failure == "http_500" else "refused"
    assert [(a, o, done) for a, o, _, _, done in attempts] == [(n, outcome, True) for n in (1, 2, 3)]
    ((count, last_error),) = env.rows("SELECT attempts, last_error FROM state.alert_deliveries")
    assert count == 3
    assert last_error == attempts[-1][3]
    assert ("HTTP 500" if failure == "http_500" else "cannot connect") in last_error
    assert not rec.acked


def test_url_not_on_allowlist_is_refused_at_config_load(env: Env, tmp_path: Path) -> None:
    routes = env.routes_file(webhook_routes("https://evil.example.net/x", allow="https://hooks.example.com/"))
    proc = subprocess.run(
        [sys.executable, "-m", "tracecli", "alerts-route", "run", "--routes", str(routes)],
        env={**os.environ, "HOOK_SECRET": SECRET, "TRACE_DATABASE_URL": env.database_url,
             "TRACE_KAFKA_BOOTSTRAP": env.bootstrap},
        capture_output=True, timeout=60, check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert lines == [f"error: {routes}:6: routes[0].channel.url: webhook URL https://evil.example.net/x "
                     "of route 'hook' is not on the allowlist"], lines


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def test_email_delivery_has_the_summary_in_the_subject(env: Env) -> None:
    from email import message_from_bytes

    mailbox = _Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        routes = env.routes_file(f"""\
{RETRY}
routes:
  - name: mail
    match: {{min_severity: warning}}
    channel: {{type: email, to: [oncall@example.com], smtp_host: 127.0.0.1, smtp_port: {port},
              from: trace@example.com, max_attempts: 3}}
""")
        job = env.job(routes)
        env.produce([make_alert(1, "mail"), make_alert(2, "mail", severity="info")])
        running = Running(job)
        try:
            wait_for("the e-mail", lambda: len(mailbox.messages) == 1)
            wait_for("delivered", delivered_only(env))
            time.sleep(0.5)
        finally:
            running.close()
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1
    envelope = mailbox.messages[0]
    assert envelope.rcpt_tos == ["oncall@example.com"]
    msg = message_from_bytes(envelope.content)
    assert msg["Subject"] == "[trace] high big-transfer: transfer 1 over the threshold"
    assert [(a, o) for a, o, *_ in attempts_of(env, "mail-0001")] == [(1, "ok")]


def test_kill9_mid_stream_loses_nothing_and_repeats_nothing(
    env: Env, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.delay_s = 0.02
    routes = env.routes_file(webhook_routes(url, timeout_s=1.0))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    child_env.update(HOOK_SECRET=SECRET, TRACE_DATABASE_URL=env.database_url,
                     TRACE_KAFKA_BOOTSTRAP=env.bootstrap, TRACE_ALERTS_TOPIC=env.topic)
    logs: list[Path] = []

    def start() -> subprocess.Popen[bytes]:
        log = env.root / f"run.{len(logs)}.log"
        logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "tracecli", "alerts-route", "run", "--routes", str(routes),
                 "--group", f"g-{env.topic}", "--senders", "3", "--poll-interval", "0.05",
                 "--session-timeout-ms", "6000"],
                env=child_env, stdout=out, stderr=subprocess.STDOUT,
            )

    alerts = [make_alert(i, "k9") for i in range(120)]
    proc = start()
    try:
        env.produce(alerts[:40])
        wait_for("some deliveries", lambda: len(rec.acked) >= 10, timeout=90)
        env.produce(alerts[40:80])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        acked_at_kill = len(rec.acked)
        env.produce(alerts[80:])
        proc = start()
        want = Counter((a["alert_id"], "ALERT") for a in alerts)
        wait_for("every alert acknowledged after the restart", lambda: rec.acked_alerts() == want,
                 timeout=120)
        wait_for("every row delivered", lambda: env.rows(
            "SELECT status, count(*) FROM state.alert_deliveries GROUP BY 1") == [("delivered", 120)])
        assert proc.poll() is None, logs[-1].read_text()[-3000:]
        proc.terminate()
        assert proc.wait(30) == 0, logs[-1].read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert acked_at_kill < 120
    assert rec.acked_alerts() == want
    assert rec.bad_signatures == 0
    # every attempt recorded and finished (ok, or interrupted by the kill); sends = attempts
    outcomes = Counter(o for (o,) in env.rows("SELECT outcome FROM state.alert_delivery_attempts"))
    assert set(outcomes) <= {"ok", "interrupted"}, outcomes
    assert outcomes["ok"] == 120
    by_key: defaultdict[str, int] = defaultdict(int)
    for r in rec.requests:
        by_key[r["key"]] += 1
    repeats = sum(n - 1 for n in by_key.values())
    assert repeats <= outcomes["interrupted"] + 0, (repeats, outcomes)
