"""The calls out: a signed webhook POST (httpx) and an e-mail (stdlib smtplib)."""

from __future__ import annotations

import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx
from pydantic import SecretStr

from operators.alert_route.config import EmailChannel, RoutesConfig, WebhookChannel, url_allowed
from operators.alert_route.logic import body_bytes, classify_http, email_subject, signature
from operators.alert_route.store import Claimed


@dataclass(frozen=True)
class AttemptResult:
    outcome: str
    http_status: int | None = None
    error: str | None = None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def send_webhook(client: httpx.Client, channel: WebhookChannel, allowlist: tuple[str, ...], secret: SecretStr,
                 claimed: Claimed, now: float | None = None) -> AttemptResult:
    """POST the payload to the delivery's URL (re-checked against the allowlist first)."""
    url = claimed.target
    if not url_allowed(url, allowlist):
        return AttemptResult("not_allowed", error=f"webhook URL {url} is not on the allowlist")
    body = body_bytes(claimed.payload)
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": claimed.delivery_id,
        "X-Trace-Signature": signature(secret.get_secret_value(), body),
        "X-Trace-Timestamp": str(int(time.time() if now is None else now)),
        "X-Trace-Alert-Id": claimed.alert_id,
        "X-Trace-Attempt": str(claimed.attempt),
        "User-Agent": "trace-alert-route/1",
    }
    try:
        resp = client.post(url, content=body, headers=headers, timeout=channel.timeout_s)
    except httpx.TimeoutException as exc:
        return AttemptResult("timeout", error=f"no answer within {channel.timeout_s:g} s ({_short(exc)})")
    except httpx.ConnectError as exc:
        return AttemptResult("refused", error=f"cannot connect to {url}: {_short(exc)}")
    except httpx.HTTPError as exc:
        return AttemptResult("network_error", error=_short(exc))
    outcome = classify_http(resp.status_code)
    if outcome == "ok":
        return AttemptResult("ok", resp.status_code)
    return AttemptResult(outcome, resp.status_code, f"HTTP {resp.status_code}: {resp.text[:200].strip()}")


def email_message(channel: EmailChannel, claimed: Claimed) -> EmailMessage:
    payload: dict[str, Any] = claimed.payload
    msg = EmailMessage()
    msg["Subject"] = email_subject(payload)
    msg["From"] = channel.from_
    msg["To"] = claimed.target
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{claimed.delivery_id}@trace.alerts>"  # receivers may dedupe on it
    msg["X-Trace-Alert-Id"] = claimed.alert_id
    block = payload["block"]
    msg.set_content(
        f"{payload['summary']}\n\n"
        f"kind: {payload['kind']}\nrule: {payload['rule']['id']}\nseverity: {payload['severity']}\n"
        f"chain: {payload['chain_id']}  block: {block['number']} {block['hash']}\n"
        f"alert id: {payload['alert_id']}\n\n{body_bytes(payload).decode()}\n"
    )
    return msg


def send_email(channel: EmailChannel, claimed: Claimed) -> AttemptResult:
    msg = email_message(channel, claimed)
    recipients = [r for r in claimed.target.split(",") if r]
    try:
        with smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=channel.timeout_s) as smtp:
            smtp.send_message(msg, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        outcome = "smtp_rejected" if all(c >= 500 for c in codes) else "smtp_error"
        return AttemptResult(outcome, error=f"recipients refused: {exc.recipients}")
    except smtplib.SMTPResponseException as exc:
        outcome = "smtp_rejected" if exc.smtp_code >= 500 else "smtp_error"
        return AttemptResult(outcome, error=f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
    except ConnectionRefusedError as exc:
        return AttemptResult("refused", error=f"cannot connect to {channel.smtp_host}:{channel.smtp_port}: "
                                              f"{_short(exc)}")
    except TimeoutError as exc:
        return AttemptResult("timeout", error=f"no answer within {channel.timeout_s:g} s ({_short(exc)})")
    except (smtplib.SMTPException, OSError) as exc:
        return AttemptResult("smtp_error", error=_short(exc))
    return AttemptResult("ok")


def send(client: httpx.Client, config: RoutesConfig, secrets: dict[str, SecretStr],
         claimed: Claimed) -> tuple[AttemptResult, int]:
    """Attempt ``claimed`` with its route's current settings; ``(result, max_attempts)``."""
    route = config.route(claimed.route)
    if route is None or route.channel.type != claimed.channel:
        return AttemptResult("no_route", error=f"route {claimed.route!r} ({claimed.channel}) is not "
                                               "configured any more"), 1
    channel = route.channel
    if isinstance(channel, WebhookChannel):
        result = send_webhook(client, channel, config.allowlist, secrets[route.name], claimed)
        return result, channel.max_attempts
    return send_email(channel, claimed), channel.max_attempts
