"""Prometheus metrics of the alert delivery job."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INTAKE = Counter("trace_alert_route_intake_total", "Alert records read, by result", ["result"])
ATTEMPTS = Counter(
    "trace_alert_route_deliveries_total", "Delivery attempts by route and outcome", ["route", "outcome"]
)
DEAD_LETTERS = Counter("trace_alert_route_dead_letters_total", "Deliveries given up (dead)", ["route"])
LATENCY = Histogram(
    "trace_alert_route_delivery_latency_seconds",
    "From the alert's observed_at_ms (else fired_at_ms) to the acknowledged delivery",
    ["route"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)
