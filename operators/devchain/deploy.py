"""Deploy TraceToken and TraceStaking to a dev chain and fund the traffic accounts.

Account 0 of the node (``eth_accounts``, unlocked on anvil) deploys; the next ``n_accounts``
accounts receive an initial token balance and approve the staking contract for an unlimited
amount. A :class:`Deployment` record (JSON, see :func:`save_deployment`) lets later runs and other
tools reuse the contracts: :func:`deploy` returns the given record unchanged when its contracts are
still on the chain.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from operators.devchain._rpc import receipt_ok, wait_receipts
from operators.devchain.abi import normalize_address
from operators.devchain.artifacts import staking_artifact, token_artifact
from operators.devchain.plan import TOKEN_UNIT
from tracekit.errors import BadRpcData, ConfigError, TraceError
from tracekit.jsonrpc import RpcClient, hex_to_int

DEFAULT_TRAFFIC_ACCOUNTS = 10
DEFAULT_INITIAL_BALANCE = 1_000_000 * TOKEN_UNIT
MAX_UINT256 = (1 << 256) - 1
DEPLOY_GAS = 3_000_000
SETUP_GAS = 120_000


class ContractsMissing(TraceError):
    """The dev-chain contracts are not on this chain (never deployed, reorged away, or reset)."""


@dataclass(frozen=True)
class Deployment:
    """Where the dev-chain contracts live and who drives traffic against them."""

    chain_id: int
    token: str
    staking: str
    deployer: str
    accounts: tuple[str, ...]
    block_number: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["accounts"] = list(self.accounts)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Deployment:
        try:
            return cls(
                chain_id=int(data["chain_id"]),
                token=normalize_address(data["token"]),
                staking=normalize_address(data["staking"]),
                deployer=normalize_address(data["deployer"]),
                accounts=tuple(normalize_address(a) for a in data["accounts"]),
                block_number=int(data["block_number"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid deployment record: {exc}") from exc


def load_deployment(path: Path) -> Deployment | None:
    """The record saved at ``path``, None if there is no file; ConfigError if it is unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read deployment record {path}: {exc}") from exc
    try:
        return Deployment.from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deployment record {path} is not JSON: {exc}") from exc


def save_deployment(path: Path, deployment: Deployment) -> None:
    """Write ``deployment`` to ``path`` atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(deployment.to_json(), out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def is_deployed(rpc: RpcClient, deployment: Deployment) -> bool:
    """True when ``deployment`` is for this chain and both contracts have code at ``latest``."""
    chain_id, token_code, staking_code = await rpc.batch([
        ("eth_chainId", []),
        ("eth_getCode", [deployment.token, "latest"]),
        ("eth_getCode", [deployment.staking, "latest"]),
    ])
    if hex_to_int(chain_id, "eth_chainId") != deployment.chain_id:
        return False
    return token_code not in (None, "0x", "0x0") and staking_code not in (None, "0x", "0x0")


async def deploy(
    rpc: RpcClient,
    *,
    existing: Deployment | None = None,
    n_accounts: int = DEFAULT_TRAFFIC_ACCOUNTS,
    initial_balance: int = DEFAULT_INITIAL_BALANCE,
    timeout: float = 30.0,
) -> Deployment:
    """Deploy both contracts from account 0, fund and approve ``n_accounts`` traffic accounts.

    Returns ``existing`` unchanged when its contracts are still on this chain (idempotent).
    """
    if existing is not None and await is_deployed(rpc, existing):
        return existing
    if n_accounts < 1:
        raise ConfigError(f"need at least one traffic account, got {n_accounts}")
    chain_id_hex, node_accounts = await rpc.batch([("eth_chainId", []), ("eth_accounts", [])])
    chain_id = hex_to_int(chain_id_hex, "eth_chainId")
    if not isinstance(node_accounts, list):
        raise BadRpcData("eth_accounts: expected a list")
    accounts = [normalize_address(a) for a in node_accounts]
    if len(accounts) < 2:
        raise TraceError(
            f"the node has {len(accounts)} unlocked account(s); the dev chain needs at least 2 (use anvil)"
        )
    deployer, traffic = accounts[0], tuple(accounts[1 : 1 + n_accounts])
    token_art, staking_art = token_artifact(), staking_artifact()

    async def create(data: str, what: str) -> str:
        params = {"from": deployer, "data": data, "gas": hex(DEPLOY_GAS)}
        tx_hash = await rpc.call("eth_sendTransaction", params)
        (receipt,) = await wait_receipts(rpc, [tx_hash], timeout=timeout)
        address = receipt.get("contractAddress")
        if not receipt_ok(receipt) or not isinstance(address, str):
            raise TraceError(f"deploying {what} failed (receipt status {receipt.get('status')})")
        return normalize_address(address)

    token = await create(token_art.deploy_data(), "TraceToken")
    staking = await create(staking_art.deploy_data(token), "TraceStaking")

    # Mints (all from the deployer: explicit nonces, since anvil runs a batch's calls concurrently)
    # and approvals (one per traffic account) go out as one batch.
    deployer_nonce = hex_to_int(
        await rpc.call("eth_getTransactionCount", deployer, "pending"), "eth_getTransactionCount"
    )
    calls = []
    for i, account in enumerate(traffic):
        calls.append(("eth_sendTransaction", [{
            "from": deployer, "to": token, "gas": hex(SETUP_GAS), "nonce": hex(deployer_nonce + i),
            "data": token_art.calldata("mint(address,uint256)", account, initial_balance),
        }]))
        calls.append(("eth_sendTransaction", [{
            "from": account, "to": token, "gas": hex(SETUP_GAS),
            "data": token_art.calldata("approve(address,uint256)", staking, MAX_UINT256),
        }]))
    tx_hashes = await rpc.batch(calls)
    receipts = await wait_receipts(rpc, tx_hashes, timeout=timeout)
    failed = sum(not receipt_ok(r) for r in receipts)
    if failed:
        raise TraceError(f"{failed} of {len(receipts)} setup transactions (mint/approve) reverted")
    mined_at = max(hex_to_int(r.get("blockNumber"), "receipt.blockNumber") for r in receipts)
    return Deployment(
        chain_id=chain_id,
        token=token,
        staking=staking,
        deployer=deployer,
        accounts=traffic,
        block_number=mined_at,
    )
