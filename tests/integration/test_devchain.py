"""The dev-chain tools against a dedicated anvil (0.4 s blocks): deploy, traffic, reorgs."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from devstack.anvil import AnvilSpec, start_anvil
from devstack.process import free_port
from operators.devchain.abi import decode_uint256, topic_to_address
from operators.devchain.artifacts import staking_artifact, token_artifact
from operators.devchain.deploy import DEFAULT_INITIAL_BALANCE, MAX_UINT256, Deployment, deploy
from operators.devchain.traffic import BlockObserved, TrafficMix, inject_reorg, run_traffic
from tracekit.errors import ConfigError, RpcUnavailable
from tracekit.jsonrpc import RpcClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ZERO = "0x" + "0" * 40


@pytest.fixture(scope="module")
def anvil_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    spec = AnvilSpec(port=free_port(), block_time=0.4)
    proc = start_anvil(spec, tmp_path_factory.mktemp("devchain") / "anvil.log")
    try:
        yield spec.rpc_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def rpc(anvil_url: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(anvil_url) as client:
        yield client


@pytest.fixture(scope="module")
async def deployment(anvil_url: str) -> Deployment:
    async with RpcClient(anvil_url) as client:
        return await deploy(client)


async def view(rpc: RpcClient, to: str, data: str) -> int:
    return decode_uint256(await rpc.call("eth_call", {"to": to, "data": data}, "latest"))


async def test_deploy(rpc: RpcClient, deployment: Deployment) -> None:
    token, staking = token_artifact(), staking_artifact()
    assert deployment.chain_id == 10143
    assert len(deployment.accounts) == 10
    assert deployment.deployer not in deployment.accounts
    assert await view(rpc, deployment.token, token.calldata("decimals()")) == 18
    assert await view(rpc, deployment.staking, staking.calldata("token()")) == int(deployment.token, 16)
    for account in deployment.accounts:
        assert await view(rpc, deployment.token, token.calldata("balanceOf(address)", account)) >= 1
        allowance = token.calldata("allowance(address,address)", account, deployment.staking)
        assert await view(rpc, deployment.token, allowance) == MAX_UINT256
    supply = await view(rpc, deployment.token, token.calldata("totalSupply()"))
    assert supply >= DEFAULT_INITIAL_BALANCE * len(deployment.accounts) // 2  # traffic may have burnt some
    # idempotent: the record is reused while its contracts are on the chain
    assert await deploy(rpc, existing=deployment) is deployment


async def test_traffic_reaches_100_tx_per_block(rpc: RpcClient, deployment: Deployment) -> None:
    stop = asyncio.Event()
    blocks: list[BlockObserved] = []

    def on_block(block: BlockObserved) -> None:
        blocks.append(block)
        if len(blocks) >= 11:
            stop.set()

    stats = await run_traffic(rpc, deployment, TrafficMix(tx_per_block=100), stop, seed=11, on_block=on_block)
    measured = blocks[1:11]  # the first block seen predates the first batch
    assert sum(b.tx_count for b in measured) / len(measured) >= 100, [b.tx_count for b in blocks]
    assert stats.failed == 0
    assert stats.reverted == 0
    assert stats.sent >= 1000

    first, last = measured[0].number, measured[-1].number
    token, staking = token_artifact(), staking_artifact()
    transfer = token.topic("Transfer(address,address,uint256)")
    logs = await rpc.call("eth_getLogs", {"fromBlock": hex(first), "toBlock": hex(last),
                                          "address": [deployment.token, deployment.staking]})
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for log in logs:
        by_topic.setdefault(log["topics"][0], []).append(log)
    assert {log["address"] for log in logs} == {deployment.token, deployment.staking}
    transfers = by_topic[transfer]
    assert all(log["address"] == deployment.token for log in transfers)
    senders = {topic_to_address(log["topics"][1]) for log in transfers}
    receivers = {topic_to_address(log["topics"][2]) for log in transfers}
    assert ZERO in senders  # mints
    assert ZERO in receivers  # burns
    assert deployment.staking in receivers  # delegations pull tokens
    for event in ("Delegated(address,address,uint256)", "Undelegated(address,address,uint256)"):
        found = by_topic.get(staking.topic(event), [])
        assert found, event
        assert all(log["address"] == deployment.staking for log in found)
        assert {topic_to_address(log["topics"][1]) for log in found} <= set(deployment.accounts)


async def test_inject_reorg_replaces_the_last_blocks(rpc: RpcClient, deployment: Deployment) -> None:
    result = await inject_reorg(rpc, 3)
    assert result.depth == 3
    assert result.head_after == result.head
    assert [b.number for b in result.replaced] == [result.head - 2, result.head - 1, result.head]
    assert all(b.old_hash != b.new_hash for b in result.replaced)
    below = await rpc.call("eth_getBlockByNumber", hex(result.head - 3), False)
    chain = [await rpc.call("eth_getBlockByNumber", hex(b.number), False) for b in result.replaced]
    assert [b["hash"] for b in chain] == list(result.new_hashes)
    assert [b["parentHash"] for b in chain] == [below["hash"], *result.new_hashes[:-1]]


async def test_traffic_recovers_from_a_reorg(rpc: RpcClient, deployment: Deployment) -> None:
    stop = asyncio.Event()
    blocks: list[BlockObserved] = []
    five = asyncio.Event()

    def on_block(block: BlockObserved) -> None:
        blocks.append(block)
        if len(blocks) == 5:
            five.set()
        if len(blocks) >= 20:
            stop.set()

    async def reorg_midway() -> None:
        await five.wait()
        await inject_reorg(rpc, 2)

    stats, _ = await asyncio.gather(
        run_traffic(rpc, deployment, TrafficMix(tx_per_block=50), stop, seed=5, on_block=on_block),
        reorg_midway(),
    )
    assert stats.reverted == 0
    assert stats.failed == 0
    assert stats.resyncs >= 2  # the start, and after the reorg
    assert [b.tx_count for b in blocks[-5:]] == [50] * 5, [b.tx_count for b in blocks]


async def test_reorg_depth_is_validated(rpc: RpcClient) -> None:
    with pytest.raises(ConfigError, match=">= 1"):
        await inject_reorg(rpc, 0)
    with pytest.raises(ConfigError, match="exceeds the chain height"):
        await inject_reorg(rpc, 10**9)


async def test_unreachable_rpc_is_rpc_unavailable() -> None:
    async with RpcClient(f"http://127.0.0.1:{free_port()}", timeout=2.0) as dead:
        with pytest.raises(RpcUnavailable):
            await deploy(dead)
        with pytest.raises(RpcUnavailable):
            await inject_reorg(dead, 1)
