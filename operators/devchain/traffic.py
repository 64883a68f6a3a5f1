"""Dev-chain traffic: a pure planner (:mod:`operators.devchain.plan`) and a thin async driver.

Each new head, :func:`run_traffic` plans one block of transactions and sends them as ONE JSON-RPC
batch of ``eth_sendTransaction`` (anvil's accounts are unlocked) with explicit ``gas`` and
``nonce``: anvil runs a batch's calls concurrently, so node-assigned nonces would collide. It then
reads the new blocks, their receipts and its accounts' ``pending`` nonces. A reorg (parent hash
mismatch), a rejected send, a reverted transaction or a nonce that differs from the driver's own
count (its mined transactions were dropped by a reorg it could not see, or someone else uses the
accounts) marks the planner's view stale; before the next batch the driver then drops its
accounts' pool transactions and reloads nonces, balances and delegations at ``latest``.

:func:`inject_reorg` and :func:`run_reorgs` drive ``anvil_reorg``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from operators.devchain._rpc import batch_settled, block_number
from operators.devchain.abi import decode_uint256, normalize_address
from operators.devchain.artifacts import staking_artifact, token_artifact
from operators.devchain.deploy import ContractsMissing, Deployment, is_deployed
from operators.devchain.plan import (
    DEFAULT_VALIDATORS,
    PlanState,
    TrafficMix,
    TxKind,
    TxRequest,
    plan_block,
)
from tracekit.errors import BadRpcData, ConfigError, RpcError, TraceError
from tracekit.jsonrpc import Call, RpcClient, hex_to_int

__all__ = [
    "DEFAULT_VALIDATORS",
    "GAS_LIMITS",
    "BlockObserved",
    "ContractsMissing",
    "PlanState",
    "ReorgInjected",
    "ReplacedBlock",
    "TrafficMix",
    "TrafficStats",
    "TxKind",
    "TxRequest",
    "encode_tx",
    "inject_reorg",
    "plan_block",
    "run_reorgs",
    "run_traffic",
]

# Explicit gas per kind (no per-tx estimateGas); worst cases measured on anvil plus headroom.
GAS_LIMITS: dict[TxKind, int] = {
    TxKind.TRANSFER: 80_000,
    TxKind.MINT: 80_000,
    TxKind.BURN: 60_000,
    TxKind.DELEGATE: 150_000,
    TxKind.UNDELEGATE: 100_000,
    TxKind.ETH_TRANSFER: 21_000,
}
_HASHES_KEPT = 64
_MAX_BLOCKS_READ = 16


def encode_tx(tx: TxRequest, deployment: Deployment) -> dict[str, str]:
    """``eth_sendTransaction`` parameters for ``tx`` (without nonce). Pure."""
    token, staking = token_artifact(), staking_artifact()
    base = {"from": tx.sender, "gas": hex(GAS_LIMITS[tx.kind])}
    if tx.kind is TxKind.ETH_TRANSFER:
        return {**base, "to": _cp(tx), "value": hex(tx.amount)}
    if tx.kind is TxKind.TRANSFER:
        data = token.calldata("transfer(address,uint256)", _cp(tx), tx.amount)
    elif tx.kind is TxKind.MINT:
        data = token.calldata("mint(address,uint256)", _cp(tx), tx.amount)
    elif tx.kind is TxKind.BURN:
        data = token.calldata("burn(uint256)", tx.amount)
    else:
        signature = f"{tx.kind.value}(address,uint256)"  # delegate / undelegate
        return {**base, "to": deployment.staking, "data": staking.calldata(signature, _cp(tx), tx.amount)}
    return {**base, "to": deployment.token, "data": data}


def _cp(tx: TxRequest) -> str:
    if tx.counterparty is None:
        raise ValueError(f"{tx.kind} needs a counterparty: {tx}")
    return tx.counterparty


@dataclass
class TrafficStats:
    """Counters of a traffic run.

    ``sent``/``failed``: sends the node accepted/rejected. ``mined``: transactions (anyone's) in the
    blocks seen. ``reverted``: the generator's transactions mined with status 0. ``reorgs``: blocks
    whose parent was not the block seen before at that height. ``resyncs``: state reloads.
    """

    blocks: int = 0
    sent: int = 0
    failed: int = 0
    mined: int = 0
    reverted: int = 0
    reorgs: int = 0
    resyncs: int = 0

    @property
    def tx_per_block(self) -> float:
        return self.mined / self.blocks if self.blocks else 0.0


@dataclass(frozen=True)
class BlockObserved:
    """One new block seen by the driver."""

    number: int
    hash: str
    tx_count: int  # all its transactions, not only the generator's
    reverted: int  # the generator's transactions in it that reverted
    gas_used: int
    reorg: bool  # its parent is not the block the driver saw before at that height


async def _wait_stop(stop: asyncio.Event, timeout: float) -> bool:
    """Sleep up to ``timeout``; True when ``stop`` got set."""
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()


class _TrafficDriver:
    def __init__(
        self,
        rpc: RpcClient,
        deployment: Deployment,
        mix: TrafficMix,
        *,
        seed: int,
        validators: Sequence[str],
        on_block: Callable[[BlockObserved], None] | None,
        poll_interval: float,
        stats: TrafficStats | None,
    ) -> None:
        self.rpc = rpc
        self.deployment = deployment
        self.mix = mix
        self.rng = random.Random(seed)
        self.accounts = deployment.accounts
        self.account_set = frozenset(a.lower() for a in self.accounts)
        self.state = PlanState(validators=tuple(normalize_address(v) for v in validators))
        self.nonces: dict[str, int] = {}
        self.hashes: dict[int, str] = {}
        self.stats = stats if stats is not None else TrafficStats()
        self.on_block = on_block
        self.poll_interval = poll_interval
        self.stale = True  # the planner's view must be (re)loaded before planning

    async def run(self, stop: asyncio.Event) -> TrafficStats:
        last = await block_number(self.rpc)
        while True:
            head = await self._next_head(last, stop)
            if head is None:
                return self.stats
            if self.stale:
                await self._resync()
            await self._send_block()
            await self._observe(last, head)
            last = head

    async def _next_head(self, last: int, stop: asyncio.Event) -> int | None:
        while True:
            head = await block_number(self.rpc)
            if head != last:
                return head
            if await _wait_stop(stop, self.poll_interval):
                return None

    async def _resync(self) -> None:
        """Drop the accounts' pool transactions, then reload nonces, balances and delegations.

        The driver acts right after a new head, long before the next block is mined, so once the
        pool holds none of its transactions ``latest`` is the state its next batch executes on.
        """
        with contextlib.suppress(RpcError):  # not anvil: nothing to drop, state is read anyway
            await self.rpc.batch([("anvil_removePoolTransactions", [a]) for a in self.accounts])
        if not await is_deployed(self.rpc, self.deployment):
            raise ContractsMissing(
                f"no dev-chain contracts at {self.deployment.token} / {self.deployment.staking} on this "
                "chain (reorged away or chain reset?); deploy again"
            )
        tag = "latest"
        token, staking = token_artifact(), staking_artifact()
        validators = self.state.validators
        calls: list[Call] = [("eth_getTransactionCount", [a, tag]) for a in self.accounts]
        calls += [
            ("eth_call", [{"to": self.deployment.token, "data": token.calldata("balanceOf(address)", a)},
                          tag])
            for a in self.accounts
        ]
        pairs = [(a, v) for a in self.accounts for v in validators]
        calls += [
            ("eth_call", [{"to": self.deployment.staking,
                           "data": staking.calldata("delegationOf(address,address)", a, v)}, tag])
            for a, v in pairs
        ]
        results = await self.rpc.batch(calls)
        n = len(self.accounts)
        try:
            self.nonces = {
                a: hex_to_int(r, "eth_getTransactionCount")
                for a, r in zip(self.accounts, results[:n], strict=True)
            }
            balances = {a: decode_uint256(r) for a, r in zip(self.accounts, results[n : 2 * n], strict=True)}
            delegations = {p: decode_uint256(r) for p, r in zip(pairs, results[2 * n :], strict=True)}
        except ValueError as exc:
            raise BadRpcData(f"unexpected eth_call result while loading traffic state: {exc}") from exc
        self.state = PlanState(validators, balances, delegations)
        self.stale = False
        self.stats.resyncs += 1

    async def _send_block(self) -> None:
        planned = plan_block(self.mix, self.rng, self.accounts, self.state)
        calls: list[Call] = []
        for tx in planned:
            params = encode_tx(tx, self.deployment)
            params["nonce"] = hex(self.nonces[tx.sender])
            self.nonces[tx.sender] += 1
            calls.append(("eth_sendTransaction", [params]))
        results = await batch_settled(self.rpc, calls)
        failed = sum(isinstance(r, RpcError) for r in results)
        self.stats.sent += len(results) - failed
        self.stats.failed += failed
        if failed:
            self.stale = True

    async def _observe(self, last: int, head: int) -> None:
        rewound = head < last
        first = head if rewound else max(last + 1, head - _MAX_BLOCKS_READ + 1)
        numbers = range(first, head + 1)
        calls: list[Call] = [("eth_getTransactionCount", [a, "pending"]) for a in self.accounts]
        for n in numbers:
            calls += [("eth_getBlockByNumber", [hex(n), False]), ("eth_getBlockReceipts", [hex(n)])]
        results = await self.rpc.batch(calls)
        pending = results[: len(self.accounts)]
        results = results[len(self.accounts) :]
        for account, count in zip(self.accounts, pending, strict=True):
            if hex_to_int(count, "eth_getTransactionCount") != self.nonces.get(account):
                self.stale = True
        for i, n in enumerate(numbers):
            block, receipts = results[2 * i], results[2 * i + 1]
            if not isinstance(block, dict) or not isinstance(receipts, list):
                continue  # the chain moved under us (reorged or rewound); next round sees it
            parent = self.hashes.get(n - 1)
            reorg = rewound or (parent is not None and parent != block.get("parentHash"))
            self.hashes[n] = str(block.get("hash"))
            self.hashes.pop(n - _HASHES_KEPT, None)
            observed = BlockObserved(
                number=n,
                hash=str(block.get("hash")),
                tx_count=len(block.get("transactions") or ()),
                reverted=sum(
                    isinstance(r, dict) and r.get("status") == "0x0" and r.get("from") in self.account_set
                    for r in receipts
                ),
                gas_used=hex_to_int(block.get("gasUsed"), "block.gasUsed"),
                reorg=reorg,
            )
            self.stats.blocks += 1
            self.stats.mined += observed.tx_count
            self.stats.reverted += observed.reverted
            if reorg:
                self.stats.reorgs += 1
            if reorg or observed.reverted:
                self.stale = True
            if self.on_block is not None:
                self.on_block(observed)
        if rewound:
            self.hashes = {k: v for k, v in self.hashes.items() if k <= head}


async def run_traffic(
    rpc: RpcClient,
    deployment: Deployment,
    mix: TrafficMix,
    stop: asyncio.Event,
    *,
    seed: int,
    on_block: Callable[[BlockObserved], None] | None = None,
    validators: Sequence[str] = DEFAULT_VALIDATORS,
    poll_interval: float = 0.02,
    stats: TrafficStats | None = None,
) -> TrafficStats:
    """Send ``mix.tx_per_block`` transactions per new block until ``stop`` is set; return counters.

    Raises :class:`ContractsMissing` when the deployment's contracts are not (or no longer) on the
    chain; the caller may :func:`~operators.devchain.deploy.deploy` again and restart. Counters
    go to ``stats`` when given (so they survive such a restart), else to a new object.
    """
    driver = _TrafficDriver(
        rpc, deployment, mix, seed=seed, validators=validators, on_block=on_block,
        poll_interval=poll_interval, stats=stats,
    )
    return await driver.run(stop)


# -- reorgs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplacedBlock:
    number: int
    old_hash: str
    new_hash: str


@dataclass(frozen=True)
class ReorgInjected:
    """An ``anvil_reorg`` done: the replaced heights with their hashes read before and after."""

    depth: int
    head: int  # head number before the reorg (anvil keeps it)
    head_after: int  # head number read right after (== head unless a block was mined meanwhile)
    replaced: tuple[ReplacedBlock, ...]

    @property
    def old_hashes(self) -> tuple[str, ...]:
        return tuple(b.old_hash for b in self.replaced)

    @property
    def new_hashes(self) -> tuple[str, ...]:
        return tuple(b.new_hash for b in self.replaced)


async def _hashes(rpc: RpcClient, numbers: Sequence[int]) -> list[str]:
    blocks = await rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    out = []
    for n, block in zip(numbers, blocks, strict=True):
        if not isinstance(block, dict) or not isinstance(block.get("hash"), str):
            raise BadRpcData(f"eth_getBlockByNumber({n}): no block")
        out.append(str(block["hash"]))
    return out


async def _fresh_head(rpc: RpcClient, timeout: float) -> None:
    """Wait (up to ``timeout``) for a new block, so the reorg runs early in a block interval."""
    start = await block_number(rpc)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and await block_number(rpc) == start:
        await asyncio.sleep(0.01)


async def inject_reorg(
    rpc: RpcClient,
    depth: int,
    *,
    txs: Sequence[tuple[dict[str, Any], int]] | None = None,
    seed: int | None = None,
    align_timeout: float = 1.0,
) -> ReorgInjected:
    """Replace the last ``depth`` blocks with ``anvil_reorg`` (head number unchanged).

    ``txs`` are ``(eth_sendTransaction params, block offset < depth)`` pairs placed in the new
    blocks; by default one small ETH transfer from account 0 per replaced block, with a random
    value, so every replaced block differs from the one it replaces.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"reorg depth must be an integer >= 1, got {depth!r}")
    if depth > await block_number(rpc):
        raise ConfigError(f"reorg depth {depth} exceeds the chain height {await block_number(rpc)}")
    if txs is None:
        accounts = await rpc.call("eth_accounts")
        if not isinstance(accounts, list) or len(accounts) < 2:
            raise TraceError("anvil_reorg needs at least 2 unlocked accounts on the node")
        rng = random.Random(seed)
        txs = [({"from": accounts[0], "to": accounts[-1], "value": hex(rng.randint(1, 10**12))}, offset)
               for offset in range(depth)]
    for _tx, offset in txs:
        if not 0 <= offset < depth:
            raise ConfigError(f"reorg tx block offset must be in [0, {depth - 1}], got {offset}")
    await _fresh_head(rpc, align_timeout)
    head = await block_number(rpc)
    numbers = list(range(head - depth + 1, head + 1))
    old = await _hashes(rpc, numbers)
    await rpc.call("anvil_reorg", depth, [[dict(tx), offset] for tx, offset in txs])
    head_after = await block_number(rpc)
    new = await _hashes(rpc, numbers)
    return ReorgInjected(
        depth=depth,
        head=head,
        head_after=head_after,
        replaced=tuple(ReplacedBlock(n, o, w) for n, o, w in zip(numbers, old, new, strict=True)),
    )


async def run_reorgs(
    rpc: RpcClient,
    stop: asyncio.Event,
    *,
    every_seconds: float,
    min_depth: int,
    max_depth: int,
    seed: int,
    protect_through: int = 0,
    on_reorg: Callable[[ReorgInjected], None] | None = None,
) -> int:
    """Inject a reorg of random depth in [min_depth, max_depth] every ~``every_seconds`` (±25 %).

    Blocks at or below ``protect_through`` (e.g. the deployment's block) are never replaced: the
    depth is capped to stay above it. Returns how many reorgs were injected once ``stop`` is set.
    """
    if not every_seconds > 0:
        raise ConfigError(f"reorg interval must be > 0 seconds, got {every_seconds}")
    if not 1 <= min_depth <= max_depth:
        raise ConfigError(f"reorg depths must satisfy 1 <= min <= max, got min={min_depth} max={max_depth}")
    rng = random.Random(seed)
    count = 0
    while not await _wait_stop(stop, every_seconds * rng.uniform(0.75, 1.25)):
        depth = min(rng.randint(min_depth, max_depth), await block_number(rpc) - protect_through)
        if depth < 1:
            continue
        result = await inject_reorg(rpc, depth, seed=rng.getrandbits(32))
        count += 1
        if on_reorg is not None:
            on_reorg(result)
    return count
