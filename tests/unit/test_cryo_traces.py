"""trace_block replies -> cryo's ``traces`` rows: every action and result shape, and errors naming
block, transaction, trace and field (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from operators.cryo_ingest.columns import TRACES
from operators.cryo_ingest.traces import traces_table
from tracekit.errors import BadRpcData

BH = "0x" + "bb" * 32
TH = "0x" + "11" * 32


def a(i: int) -> str:
    return "0x" + f"{i:040x}"


def trace(kind: str, action: dict[str, Any], result: dict[str, Any] | None, path: list[int],
          **fields: Any) -> dict[str, Any]:
    base = {"action": action, "blockHash": BH, "blockNumber": 7, "result": result, "subtraces": 0,
            "traceAddress": path, "transactionHash": TH, "transactionPosition": 2, "type": kind}
    base.update(fields)
    return base


CALL = trace("call", {"from": a(1), "to": a(2), "value": "0xde0b6b3a7640000", "gas": "0x5208",
                      "input": "0xa9059cbb", "callType": "call"},
             {"gasUsed": "0x100", "output": "0x01"}, [], subtraces=2)
STATIC = trace("call", {"from": a(2), "to": a(3), "value": "0x0", "gas": "0x10", "input": "0x",
                        "callType": "staticcall"}, {"gasUsed": "0x0", "output": "0x"}, [0])
CREATE = trace("create", {"from": a(2), "value": "0x0", "gas": "0x20", "init": "0x60006000fd",
                          "creationMethod": "create"},
               {"address": a(9), "code": "0x", "gasUsed": "0x6"}, [1], error="Reverted")
SUICIDE = trace("suicide", {"address": a(9), "refundAddress": a(1), "balance": "0x3e7"}, None, [1, 0])
REWARD = trace("reward", {"author": a(5), "value": "0x1bc16d674ec80000", "rewardType": "block"}, None, [],
               transactionHash=None, transactionPosition=None)


def test_every_action_and_result_shape() -> None:
    rows = traces_table(10143, [CALL, STATIC, CREATE, SUICIDE, REWARD]).to_pylist()
    assert rows[0] == {
        "action_from": bytes.fromhex(a(1)[2:]), "action_to": bytes.fromhex(a(2)[2:]),
        "action_value": str(10**18), "action_gas": 21000, "action_input": b"\xa9\x05\x9c\xbb",
        "action_call_type": "call", "action_init": None, "action_reward_type": None, "action_type": "call",
        "result_gas_used": 256, "result_output": b"\x01", "result_code": None, "result_address": None,
        "trace_address": "", "subtraces": 2, "transaction_index": 2,
        "transaction_hash": bytes.fromhex(TH[2:]), "block_number": 7, "block_hash": bytes.fromhex(BH[2:]),
        "error": None, "chain_id": 10143,
    }
    assert (rows[1]["action_call_type"], rows[1]["trace_address"], rows[1]["result_output"]) == (
        "static_call", "0", b"")
    create = rows[2]
    assert (create["action_type"], create["action_init"], create["action_to"], create["action_input"]) == (
        "create", bytes.fromhex("60006000fd"), None, None)
    assert (rows[2]["result_code"], rows[2]["result_address"], rows[2]["error"]) == (
        b"", bytes.fromhex(a(9)[2:]), "Reverted")  # failed traces are kept, as cryo 0.3.2 does
    assert (rows[3]["action_from"], rows[3]["action_to"], rows[3]["action_value"], rows[3]["action_gas"]) == (
        bytes.fromhex(a(9)[2:]), bytes.fromhex(a(1)[2:]), "999", None)
    assert (rows[3]["trace_address"], rows[3]["result_gas_used"]) == ("1_0", None)
    assert (rows[4]["action_reward_type"], rows[4]["transaction_index"], rows[4]["transaction_hash"]) == (
        "reward", None, None)


@pytest.mark.parametrize(("node", "cryo"), [("call", "call"), ("callcode", "call_code"),
                                            ("delegatecall", "delegate_call"), ("staticcall", "static_call"),
                                            ("none", "none")])
def test_call_types_have_cryos_names(node: str, cryo: str) -> None:
    call = copy.deepcopy(CALL)
    call["action"]["callType"] = node
    assert traces_table(1, [call]).column("action_call_type").to_pylist() == [cryo]


def test_no_traces_is_an_empty_table_of_the_schema() -> None:
    table = traces_table(1, [])
    assert table.num_rows == 0 and table.schema.equals(TRACES)


def _broken(path: str, value: Any, base: dict[str, Any] = CALL) -> dict[str, Any]:
    t = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = t
    for key in parents:
        target = target[key]
    target[last] = value
    return t


@pytest.mark.parametrize(("bad", "message"), [
    (_broken("action.from", "0x1234"),
     r"block 7 transaction 2 trace \[\]: field 'action.from' should be 20 bytes"),
    (_broken("action.gas", "21000"), r"field 'action.gas' is not a 0x quantity: '21000'"),
    (_broken("action.callType", "jump"), r"field 'action.callType' is not one of none, call, callcode"),
    (_broken("type", "vote"), r"field 'type' is not one of call, create, suicide, reward"),
    (_broken("traceAddress", [0, -1]), r"field 'traceAddress' is not a list of indices"),
    (_broken("result", {"gasUsed": "0x1"}), r"field 'result' is neither a call's nor a create's result"),
    (_broken("blockHash", None), r"field 'blockHash' is not 0x data"),
    (_broken("action.gas", hex(2**32)), rf"block 7 transaction 2 trace \[\]: action_gas {2**32} does not fit"
                                        " cryo's uint32"),
    ("not a trace", r"trace #0 of the batch: field 'trace' is not a JSON object"),
])
def test_bad_traces_name_block_transaction_and_field(bad: Any, message: str) -> None:
    with pytest.raises(BadRpcData, match=message):
        traces_table(1, [bad])
