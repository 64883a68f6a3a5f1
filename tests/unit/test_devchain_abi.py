"""ABI encoding, transaction encoding and the deployment record (all pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.devchain.abi import (
    arg_types,
    decode_uint256,
    decode_words,
    encode_call,
    encode_word,
    normalize_address,
    topic_to_address,
)
from operators.devchain.artifacts import load_artifact
from operators.devchain.deploy import Deployment, load_deployment, save_deployment
from operators.devchain.plan import DEFAULT_VALIDATORS, TxKind, TxRequest
from operators.devchain.traffic import GAS_LIMITS, encode_tx
from tracekit.errors import ConfigError

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
DEPLOYMENT = Deployment(
    chain_id=10143,
    token="0x5fbdb2315678afecb367f032d93f642f64180aa3",
    staking="0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
    deployer="0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
    accounts=(ALICE.lower(), BOB),
    block_number=3,
)


def test_transfer_calldata_matches_the_standard_encoding() -> None:
    data = encode_call("0xa9059cbb", "transfer(address,uint256)", [ALICE, 10**18])
    assert data == (
        "0xa9059cbb"
        "00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8"
        "0000000000000000000000000000000000000000000000000de0b6b3a7640000"
    )


def test_arg_types() -> None:
    assert arg_types("transferFrom(address,address,uint256)") == ("address", "address", "uint256")
    assert arg_types("totalSupply()") == ()
    with pytest.raises(ValueError, match="canonical"):
        arg_types("transfer(address, uint256")


@pytest.mark.parametrize(
    ("abi_type", "value"),
    [("uint256", -1), ("uint256", 1 << 256), ("uint8", 256), ("uint256", True), ("address", "0x12"),
     ("address", 5), ("bool", 1), ("bytes32", "0x00"), ("string", "x"), ("uint7", 1)],
)
def test_encode_word_rejects_bad_values(abi_type: str, value: int | str | bool) -> None:
    with pytest.raises(ValueError):
        encode_word(abi_type, value)


def test_encode_word_static_types() -> None:
    assert encode_word("uint256", (1 << 256) - 1) == "f" * 64
    assert encode_word("bool", True) == "0" * 63 + "1"
    assert encode_word("bytes32", "0x" + "AB" * 32) == "ab" * 32


def test_decoding() -> None:
    assert decode_uint256("0x" + "0" * 63 + "7") == 7
    assert decode_words("0x") == []
    with pytest.raises(ValueError):
        decode_uint256("0x")
    with pytest.raises(ValueError):
        decode_words("0x123")
    assert topic_to_address("0x000000000000000000000000" + ALICE[2:]) == ALICE.lower()
    with pytest.raises(ValueError):
        topic_to_address("0x" + "f" * 64)
    assert normalize_address(ALICE) == ALICE.lower()


@pytest.mark.parametrize("kind", list(TxKind))
def test_encode_tx_targets_and_gas(kind: TxKind) -> None:
    counterparty = None if kind is TxKind.BURN else (
        DEFAULT_VALIDATORS[0] if kind in (TxKind.DELEGATE, TxKind.UNDELEGATE) else BOB)
    params = encode_tx(TxRequest(kind, ALICE.lower(), counterparty, 12345), DEPLOYMENT)
    assert params["from"] == ALICE.lower()
    assert params["gas"] == hex(GAS_LIMITS[kind])
    assert "nonce" not in params
    token, staking = load_artifact("TraceToken"), load_artifact("TraceStaking")
    if kind is TxKind.ETH_TRANSFER:
        assert params == {"from": ALICE.lower(), "gas": hex(21_000), "to": BOB, "value": hex(12345)}
    elif kind in (TxKind.DELEGATE, TxKind.UNDELEGATE):
        assert params["to"] == DEPLOYMENT.staking
        signature = f"{kind.value}(address,uint256)"
        assert params["data"] == staking.calldata(signature, DEFAULT_VALIDATORS[0], 12345)
    else:
        assert params["to"] == DEPLOYMENT.token
        signature = "burn(uint256)" if kind is TxKind.BURN else f"{kind.value}(address,uint256)"
        args = (12345,) if kind is TxKind.BURN else (BOB, 12345)
        assert params["data"] == token.calldata(signature, *args)


def test_deploy_data_appends_constructor_args() -> None:
    staking = load_artifact("TraceStaking")
    constructor_arg = encode_word("address", DEPLOYMENT.token)
    assert staking.deploy_data(DEPLOYMENT.token) == staking.bytecode + constructor_arg
    with pytest.raises(ValueError):
        staking.deploy_data()


def test_deployment_record_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "devchain.json"
    assert load_deployment(path) is None
    save_deployment(path, DEPLOYMENT)
    assert load_deployment(path) == DEPLOYMENT
    assert [p.name for p in path.parent.iterdir()] == ["devchain.json"]


def test_bad_deployment_record_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "devchain.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load_deployment(path)
    path.write_text('{"chain_id": 1, "token": "nope"}')
    with pytest.raises(ConfigError, match="invalid deployment record"):
        load_deployment(path)
