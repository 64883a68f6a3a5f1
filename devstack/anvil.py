"""The embedded chain: anvil from the pinned npm package, at 0.4 s blocks and Monad's chain id.

With ``AnvilSpec.state_path`` the chain (blocks, hashes, state) is loaded from that file at start
and written to it when anvil exits on SIGTERM, so ``trace down`` + ``up`` keeps the same chain that
Postgres holds cursors and hot rows for. A kill -9 loses what was mined since the last start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.process import ensure_port_free, spawn, wait_until
from tracekit.errors import RpcUnavailable, StackError

REPO_ROOT = Path(__file__).resolve().parents[1]


def anvil_binary() -> Path:
    """The anvil binary from ``node_modules`` (``npm ci`` installs it), else one on PATH."""
    local = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if local.exists():
        return local
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise StackError("anvil not found: run `npm ci` in the repository (or `make venv`)")


def rpc_request(url: str, method: str, *params: Any, timeout: float = 2.0) -> Any:
    """One synchronous JSON-RPC call (for the stack's checks); raises :class:`RpcUnavailable`."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            reply = json.loads(response.read())
        return reply["result"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RpcUnavailable(f"{method} failed at {url}: {exc}") from exc


def rpc_chain_id(url: str, timeout: float = 1.0) -> int | None:
    """The chain id served at ``url``, or None when nothing answers there."""
    try:
        return int(rpc_request(url, "eth_chainId", timeout=timeout), 16)
    except (RpcUnavailable, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class AnvilSpec:
    host: str = "127.0.0.1"
    port: int = 18545
    chain_id: int = 10143
    block_time: float = 0.4
    accounts: int = 20
    state_path: Path | None = None  # `--state`: loaded at start when present, written on SIGTERM

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


def start_anvil(spec: AnvilSpec, log_path: Path, *, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    ensure_port_free("anvil", spec.host, spec.port)
    argv = [
        str(anvil_binary()),
        "--host", spec.host,
        "--port", str(spec.port),
        "--chain-id", str(spec.chain_id),
        "--accounts", str(spec.accounts),
        "--balance", "1000000",
        "--gas-limit", "300000000",
    ]
    if spec.block_time > 0:
        argv += ["--block-time", str(spec.block_time)]
    if spec.state_path is not None:
        spec.state_path.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--state", str(spec.state_path)]
    proc = spawn(argv, log_path)
    wait_until(lambda: rpc_chain_id(spec.rpc_url) == spec.chain_id, timeout=timeout,
               what="anvil", proc=proc, log_path=log_path)
    return proc
