"""Logging set-up of a Trace process (called by CLI entry points, never by libraries)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("httpx", "httpcore", "websockets")


def setup_logging(level: str = "INFO") -> None:
    """One line per record on stderr; HTTP and WebSocket client chatter only from WARNING."""
    logging.basicConfig(level=level, format=FORMAT)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
