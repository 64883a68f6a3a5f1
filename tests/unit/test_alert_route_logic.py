"""Pure logic of alert_route: config, allowlist, matching, ids, signature, backoff, decisions."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from operators.alert_route.config import Match, Retry, parse_routes, url_allowed
from operators.alert_route.logic import (
    backoff_s,
    body_bytes,
    build_payload,
    decide,
    delivery_id,
    email_subject,
    matches,
    signature,
    verify_signature,
)
from operators.alert_route.service import plan_deliveries
from tracekit.errors import ConfigError

ENV = {"HOOK_SECRET": "s3cret"}

GOOD = """\
allowlist:
  - https://hooks.example.com/trace/
  - http://127.0.0.1:8080/hook
retry: {base_s: 0.5, factor: 2, cap_s: 3}
routes:
  - name: ops
    match: {rule_ids: [big-transfer], min_severity: warning}
    channel:
      type: webhook
      url: https://hooks.example.com/trace/ops
      secret_env: HOOK_SECRET
      timeout_s: 2
      max_attempts: 4
  - name: mail
    channel: {type: email, to: [a@example.com, b@example.com], smtp_host: 127.0.0.1, smtp_port: 2525,
              from: trace@example.com}
"""


def alert(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "alert_id": "a1", "kind": "ALERT", "rule_id": "big-transfer", "rule_version": 3, "tier": "INSTANT",
        "severity": "high", "chain_id": 10143, "block_number": 7, "block_hash": "0xab", "event_key": "k",
        "event_type": "transfer", "summary": "1M TRACE moved", "details_json": '{"value": 1}',
        "fired_at_ms": 1000, "observed_at_ms": 900,
    }
    base.update(over)
    return base


def test_good_config_loads() -> None:
    config, secrets = parse_routes(GOOD, "routes.yaml", ENV)
    assert [r.name for r in config.routes] == ["ops", "mail"]
    assert secrets["ops"].get_secret_value() == "s3cret"
    assert config.retry.cap_s == 3


def test_url_not_on_allowlist_is_one_line_with_file_and_line() -> None:
    bad = GOOD.replace("https://hooks.example.com/trace/ops", "https://evil.example.com/trace/ops")
    with pytest.raises(ConfigError) as info:
        parse_routes(bad, "routes.yaml", ENV)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("routes.yaml:10: routes[0].channel.url: webhook URL https://evil.example.com/trace/ops")
    assert "not on the allowlist" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("min_severity: warning", "min_severity: loud"),
         "routes.yaml:7: routes[0].match.min_severity"),
        (GOOD.replace("max_attempts: 4", "max_attempts: 0"),
         "routes.yaml:13: routes[0].channel.max_attempts"),
        (GOOD.replace("type: webhook", "type: pager"), "routes.yaml:9: routes[0].channel"),
        (GOOD.replace("routes:", "routes: [\n"), "routes.yaml:"),
        ("routes: []\n", "routes.yaml:1: routes: Tuple should have at least 1 item"),
    ],
)
def test_bad_config_names_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_routes(text, "routes.yaml", ENV)
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_missing_secret_env() -> None:
    with pytest.raises(ConfigError, match="env var HOOK_SECRET"):
        parse_routes(GOOD, "routes.yaml", {})


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/trace/ops", True),
        ("https://hooks.example.com:443/trace/x?y=1", True),
        ("https://HOOKS.example.com/trace", True),
        ("https://hooks.example.com/other", False),
        ("http://hooks.example.com/trace/ops", False),
        ("https://hooks.example.com:8443/trace/ops", False),
        ("https://hooks.example.com.evil.io/trace/ops", False),
        ("https://user@hooks.example.com/trace/ops", False),
        ("http://127.0.0.1:8080/hook", True),
        ("http://127.0.0.1:8080/hook/a", True),
        ("http://127.0.0.1:8080/hooks", False),
        ("http://127.0.0.1:8081/hook", False),
        ("ftp://127.0.0.1:8080/hook", False),
    ],
)
def test_allowlist(url: str, ok: bool) -> None:
    allow = ("https://hooks.example.com/trace/", "http://127.0.0.1:8080/hook")
    assert url_allowed(url, allow) is ok


def test_matching() -> None:
    assert matches(Match(), alert())
    assert matches(Match(rule_ids=("big-transfer",)), alert())
    assert not matches(Match(rule_ids=("other",)), alert())
    assert matches(Match(min_severity="warning"), alert(severity="high"))
    assert not matches(Match(min_severity="warning"), alert(severity="info"))
    assert matches(Match(min_severity="critical"), alert(severity="weird"))  # unknown ranks highest


def test_plan_deliveries_ids_and_payload() -> None:
    config, _ = parse_routes(GOOD, "routes.yaml", ENV)
    rows = plan_deliveries(config, alert())
    assert [(r.route, r.channel, r.target) for r in rows] == [
        ("ops", "webhook", "https://hooks.example.com/trace/ops"),
        ("mail", "email", "a@example.com,b@example.com"),
    ]
    assert rows[0].delivery_id == hashlib.sha256(b"a1\0ALERT\0ops").hexdigest()
    retraction = plan_deliveries(config, alert(kind="RETRACTION"))
    assert retraction[0].delivery_id != rows[0].delivery_id
    assert retraction[0].payload["kind"] == "RETRACTION"
    assert plan_deliveries(config, alert(severity="info"))[0].route == "mail"
    assert delivery_id("a1", "ALERT", "ops") == rows[0].delivery_id


def test_payload_body_and_signature() -> None:
    payload = build_payload(alert(), "ops", "d1")
    assert payload["rule"] == {"id": "big-transfer", "version": 3}
    assert payload["block"] == {"number": 7, "hash": "0xab"}
    assert payload["details"] == {"value": 1}
    body = body_bytes(payload)
    assert json.loads(body) == payload
    expected = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature("k", body) == expected
    assert verify_signature("k", body, expected)
    assert not verify_signature("k2", body, expected)
    assert email_subject(payload) == "[trace] high big-transfer: 1M TRACE moved"
    assert email_subject({**payload, "kind": "RETRACTION"}).startswith("[trace] RETRACTED: ")


def test_backoff_schedule() -> None:
    retry = Retry(base_s=0.5, factor=2, cap_s=3)
    assert [backoff_s(retry, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("outcome", "status", "attempt", "expected"),
    [
        ("ok", 200, 1, "delivered"),
        ("http_error", 500, 1, "pending"),
        ("http_error", 500, 3, "dead"),
        ("http_error", 404, 1, "dead"),
        ("http_error", 408, 1, "pending"),
        ("http_error", 429, 2, "pending"),
        ("timeout", None, 1, "pending"),
        ("refused", None, 3, "dead"),
        ("not_allowed", None, 1, "dead"),
        ("smtp_rejected", None, 1, "dead"),
        ("smtp_error", None, 1, "pending"),
    ],
)
def test_decide(outcome: str, status: int | None, attempt: int, expected: str) -> None:
    retry = Retry(base_s=0.5, factor=2, cap_s=3)
    decision = decide(outcome, status, attempt, 3, retry)
    assert decision.status == expected
    assert decision.dead_letter is (expected == "dead")
    if expected == "pending":
        assert decision.retry_in_s == backoff_s(retry, attempt)
