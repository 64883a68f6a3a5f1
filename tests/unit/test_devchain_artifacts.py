"""The committed contract artifacts match the current Solidity sources (a stale artifact fails)."""

from __future__ import annotations

import hashlib
import re

import pytest

from operators.devchain.artifacts import (
    BUILD_SCRIPT,
    CONTRACT_NAMES,
    CONTRACTS_DIR,
    REBUILD_COMMAND,
    load_artifact,
)

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"  # ERC-20 Transfer


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_artifact_matches_its_source(name: str) -> None:
    artifact = load_artifact(name)
    source = CONTRACTS_DIR / f"{name}.sol"
    assert artifact.source_file == source
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert artifact.source_sha256 == digest, (
        f"{source.name} changed since its artifact was built: run `{REBUILD_COMMAND}` and commit "
        f"operators/devchain/artifacts/{name}.json"
    )


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_artifact_is_usable_without_a_compiler(name: str) -> None:
    artifact = load_artifact(name)
    pragma = re.search(r"pragma solidity ([0-9.]+);", artifact.source_file.read_text())
    assert pragma is not None
    assert artifact.solc_version.startswith(pragma.group(1) + "+")
    assert re.fullmatch(r"0x[0-9a-f]{200,}", artifact.bytecode)
    assert all(re.fullmatch(r"0x[0-9a-f]{8}", s) for s in artifact.selectors.values())
    assert all(re.fullmatch(r"0x[0-9a-f]{64}", t) for t in artifact.event_topics.values())


def test_the_build_script_is_where_the_rebuild_command_says() -> None:
    assert BUILD_SCRIPT.exists()
    assert REBUILD_COMMAND == "node operators/devchain/build_contracts.js"


def test_selectors_and_topics_the_generator_uses() -> None:
    token, staking = load_artifact("TraceToken"), load_artifact("TraceStaking")
    assert token.selector("transfer(address,uint256)") == "0xa9059cbb"
    assert token.selector("approve(address,uint256)") == "0x095ea7b3"
    assert token.selector("balanceOf(address)") == "0x70a08231"
    for signature in ("mint(address,uint256)", "burn(uint256)", "transferFrom(address,address,uint256)"):
        token.selector(signature)
    for signature in ("delegate(address,uint256)", "undelegate(address,uint256)",
                      "delegationOf(address,address)", "stakeOf(address)"):
        staking.selector(signature)
    assert token.topic("Transfer(address,address,uint256)") == TRANSFER_TOPIC
    staking.topic("Delegated(address,address,uint256)")
    staking.topic("Undelegated(address,address,uint256)")
    with pytest.raises(KeyError, match="no function"):
        token.selector("steal()")


def test_event_abi_matches_the_brief() -> None:
    staking = load_artifact("TraceStaking")
    events = {e["name"]: e for e in staking.abi if e["type"] == "event"}
    for name in ("Delegated", "Undelegated"):
        inputs = [(i["name"], i["type"], i["indexed"]) for i in events[name]["inputs"]]
        assert inputs == [("delegator", "address", True), ("validator", "address", True),
                          ("amount", "uint256", False)]
    token = load_artifact("TraceToken")
    transfer = next(e for e in token.abi if e.get("name") == "Transfer")
    assert [(i["type"], i["indexed"]) for i in transfer["inputs"]] == [
        ("address", True), ("address", True), ("uint256", False)]

