"""Trace's HTTP API (FastAPI; OpenAPI at ``/openapi.json``). Public endpoints need
``Authorization: Bearer <TRACE_API_TOKEN>``; errors are 4xx with a JSON body.

For now: live alert subscriptions as Server-Sent Events. The dispatcher's endpoints (backfills,
runs, tasks) join this app.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import StreamingResponse

from streams.alerts.subscribe import alert_stream


def create_app(*, kafka_bootstrap: str, api_token: str, alerts_topic: str = "trace.alerts") -> FastAPI:
    app = FastAPI(title="Trace API", version="0.1.0")

    def bearer(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_token.encode()):
            raise HTTPException(401, detail="missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/v1/alerts/stream", dependencies=[Depends(bearer)],
             summary="Alerts and retractions as they are published (Server-Sent Events)")
    async def stream_alerts(
        rule: Annotated[str | None, Query(description="Only this rule id")] = None,
        from_beginning: Annotated[bool, Query(description="Replay the topic from its start")] = False,
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b": subscribed\n\n"
            async for alert in alert_stream(kafka_bootstrap, topic=alerts_topic, rule=rule,
                                            from_beginning=from_beginning):
                kind = "retraction" if alert["kind"] == "RETRACTION" else "alert"
                yield b"event: " + kind.encode() + b"\nid: " + alert["alert_id"].encode() + b"\ndata: "
                yield orjson.dumps(alert) + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return app
