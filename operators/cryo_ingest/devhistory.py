"""A dev-chain history for the backfill tests and benchmarks, mined as fast as anvil can.

:func:`build_history` deploys the dev-chain contracts (:mod:`operators.devchain`), switches
automine off and mines ``blocks`` blocks with ``anvil_mine``, each with ``tx_per_block`` planned
transactions (ERC-20 transfers, mints, burns, (un)delegations, ETH transfers: all with logs or
value). With ``specials`` the history starts with one block per unusual transaction shape that a
column mapping must get right: a legacy and an EIP-2930 transaction, a uint256 value beyond
float precision, a contract creation emitting LOG0..LOG4 (no ``to``, 0 to 4 topics, empty data),
a reverted creation (status 0), a call with zero bytes in its input, a creation whose traces
have every call type, a failed subtrace and a self-destruct, and an empty block.
Needs anvil without ``--block-time`` (it mines on demand); automine is on again at the end.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Final

from operators.devchain.deploy import DEFAULT_INITIAL_BALANCE, Deployment, deploy
from operators.devchain.plan import PlanState, TrafficMix, plan_block
from operators.devchain.traffic import encode_tx
from tracekit.errors import BadRpcData, TraceError
from tracekit.jsonrpc import Call, RpcClient, hex_to_int


@dataclass(frozen=True)
class History:
    """Blocks ``first_block..last_block`` (inclusive) were mined by :func:`build_history`."""

    first_block: int
    last_block: int
    transactions: int
    deployment: Deployment

    @property
    def blocks(self) -> int:
        return self.last_block - self.first_block + 1


def _push32(value: int) -> str:
    return "7f" + value.to_bytes(32, "big").hex()


def _logs_init_code() -> str:
    """Init code that emits LOG0 (32 bytes), LOG1, LOG2, LOG3 (16 bytes), LOG4 (no data), stores nothing."""
    code = _push32(2**255 + 7) + "600052"  # mstore(0, ...)
    code += "6020" "6000" "a0"  # LOG0(offset 0, size 32)
    code += _push32(1) + "6020" "6000" "a1"
    code += _push32(1) + _push32(2) + "6000" "6000" "a2"
    code += _push32(1) + _push32(2) + _push32(3) + "6010" "6000" "a3"
    code += _push32(1) + _push32(2) + _push32(3) + _push32(4) + "6000" "6000" "a4"
    return "0x" + code + "00"


def _calls_init_code(receiver: str) -> str:
    """Init code that makes one nested trace of each kind, then self-destructs: CALL (1 wei),
    STATICCALL, DELEGATECALL, CALLCODE (1 wei) to ``receiver``, a CREATE whose init code reverts
    (a failed subtrace), SELFDESTRUCT to ``receiver`` (a ``suicide`` trace with the balance left)."""
    to = "73" + receiver.removeprefix("0x").lower()  # PUSH20 receiver
    out = "6000" "6000" "6000" "6000"  # retLength, retOffset, argsLength, argsOffset: all 0
    code = out + "6001" + to + "5a" "f1" "50"  # CALL(gas, to, 1 wei, ...); POP
    code += out + to + "5a" "fa" "50"  # STATICCALL
    code += out + to + "5a" "f4" "50"  # DELEGATECALL
    code += out + "6001" + to + "5a" "f2" "50"  # CALLCODE(gas, to, 1 wei, ...)
    code += "64" "60006000fd" "6000" "52"  # mstore(0, <init code that reverts>): bytes 27..31
    code += "6005" "601b" "6000" "f0" "50"  # CREATE(value 0, offset 27, length 5); POP
    return "0x" + code + to + "ff"  # SELFDESTRUCT(receiver)


def special_transactions(sender: str, receiver: str) -> list[dict[str, Any]]:
    """``eth_sendTransaction`` params of the unusual shapes (each mined in its own block)."""
    gwei = 10**9
    return [
        {"from": sender, "to": receiver, "value": hex(123456789012345678901234),
         "gasPrice": hex(3 * gwei), "gas": hex(21000)},  # legacy; value needs 77 bits
        {"from": sender, "to": receiver, "value": hex(2**70 + 1), "gasPrice": hex(3 * gwei),
         "gas": hex(30000), "type": "0x1",
         "accessList": [{"address": receiver, "storageKeys": ["0x" + "00" * 31 + "01"]}]},
        {"from": sender, "to": receiver, "value": hex(999999999999999999999),
         "maxFeePerGas": hex(5 * gwei), "maxPriorityFeePerGas": hex(gwei), "gas": hex(21000)},
        {"from": sender, "data": _logs_init_code(), "gas": hex(300000)},  # creation with 5 logs
        {"from": sender, "data": "0x60006000fd", "gas": hex(100000)},  # creation that reverts
        {"from": sender, "to": receiver, "value": "0x0", "data": "0x00ff0000ab", "gas": hex(50000)},
        {"from": sender, "data": _calls_init_code(receiver), "value": hex(1000), "gas": hex(400000)},
    ]


async def _tx_counts(rpc: RpcClient, first: int, last: int) -> int:
    total = 0
    for lo in range(first, last + 1, 200):
        numbers = range(lo, min(last, lo + 199) + 1)
        blocks = await rpc.batch([("eth_getBlockByNumber", (hex(n), False)) for n in numbers])
        for n, block in zip(numbers, blocks, strict=True):
            if not isinstance(block, dict) or not isinstance(block.get("transactions"), list):
                raise BadRpcData(f"block {n}: missing after build_history mined it")
            total += len(block["transactions"])
    return total


async def _deploy_mining(rpc: RpcClient) -> Deployment:
    """:func:`deploy` while mining whatever is pending every few ms.

    Automine alone is not enough: deploy sends a batch with explicit nonces that anvil may take
    out of order, and a transaction queued behind a nonce gap waits for the next block.
    """
    stop = asyncio.Event()

    async def mine() -> None:
        while not stop.is_set():
            status = await rpc.call("txpool_status")
            if isinstance(status, dict) and hex_to_int(status.get("pending"), "txpool_status.pending"):
                await rpc.call("anvil_mine", 1)
            await asyncio.sleep(0.01)

    miner = asyncio.create_task(mine())
    try:
        return await deploy(rpc)
    finally:
        stop.set()
        await miner


async def build_history(
    rpc: RpcClient, *, blocks: int, tx_per_block: int = 8, seed: int = 1, specials: bool = True
) -> History:
    """Mine ``blocks`` new blocks of traffic (see the module doc); return what was mined."""
    extra: Final = 8 if specials else 0  # seven special transactions and one empty block
    if blocks < extra + 1:
        raise TraceError(f"build_history needs at least {extra + 1} blocks, got {blocks}")
    await rpc.call("evm_setAutomine", False)
    try:
        deployment = await _deploy_mining(rpc)
        first = hex_to_int(await rpc.call("eth_blockNumber"), "eth_blockNumber") + 1
        sent = 0
        if specials:
            node_accounts = await rpc.call("eth_accounts")
            sender, receiver = node_accounts[-1], node_accounts[-2]  # not traffic accounts
            for params in special_transactions(sender, receiver):
                await rpc.call("eth_sendTransaction", params)
                await rpc.call("anvil_mine", 1)
                sent += 1
            await rpc.call("anvil_mine", 1)  # an empty block
        nonces = {
            a: hex_to_int(n, "eth_getTransactionCount")
            for a, n in zip(deployment.accounts, await rpc.batch(
                [("eth_getTransactionCount", (a, "pending")) for a in deployment.accounts]), strict=True)
        }
        state = PlanState(balances=dict.fromkeys(deployment.accounts, DEFAULT_INITIAL_BALANCE))
        mix = TrafficMix(tx_per_block=tx_per_block)
        rng = random.Random(seed)
        for _ in range(blocks - extra):
            calls: list[Call] = []
            for tx in plan_block(mix, rng, deployment.accounts, state):
                params = encode_tx(tx, deployment)
                params["nonce"] = hex(nonces[tx.sender])
                nonces[tx.sender] += 1
                calls.append(("eth_sendTransaction", (params,)))
            if calls:
                await rpc.batch(calls)
            sent += len(calls)
            await rpc.call("anvil_mine", 1)
    finally:
        await rpc.call("evm_setAutomine", True)
    last = first + blocks - 1
    head = hex_to_int(await rpc.call("eth_blockNumber"), "eth_blockNumber")
    if head != last:
        raise TraceError(f"build_history mined up to block {last} but the head is {head}: is anvil "
                         "mining on its own (--block-time)?")
    mined = await _tx_counts(rpc, first, last)
    if mined != sent:
        raise TraceError(f"build_history sent {sent} transactions but blocks {first}..{last} hold {mined}")
    return History(first, last, sent, deployment)
