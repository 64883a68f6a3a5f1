"""Minimal, pure ABI encoding and decoding for the dev-chain contracts.

Only static types are supported (``uint<N>``, ``address``, ``bool``, ``bytes32``): that is all the
dev-chain calls need. Function selectors and event topics are not computed here (the venv has no
keccak); they come precomputed from the committed artifacts (see :mod:`operators.devchain.artifacts`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

AbiValue = int | str | bool

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*\((.*)\)$")
_UINT = re.compile(r"^uint(\d*)$")
_WORD_HEX = 64


def normalize_address(value: str) -> str:
    """``value`` as a lowercase ``0x``-prefixed address; ValueError when it is not one."""
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise ValueError(f"not an address: {value!r}")
    return value.lower()


def arg_types(signature: str) -> tuple[str, ...]:
    """The argument types of a canonical signature: ``"transfer(address,uint256)"`` -> both types."""
    match = _SIGNATURE.match(signature)
    if match is None:
        raise ValueError(f"not a canonical function signature: {signature!r}")
    inner = match.group(1)
    return tuple(inner.split(",")) if inner else ()


def encode_word(abi_type: str, value: AbiValue) -> str:
    """One 32-byte word (64 hex digits, no ``0x``) for a static ABI type."""
    uint = _UINT.match(abi_type)
    if uint is not None:
        bits = int(uint.group(1) or 256)
        if bits % 8 or not 8 <= bits <= 256:
            raise ValueError(f"unsupported ABI type {abi_type!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{abi_type} needs an int, got {value!r}")
        if not 0 <= value < 1 << bits:
            raise ValueError(f"{value} does not fit {abi_type}")
        return f"{value:064x}"
    if abi_type == "address":
        if not isinstance(value, str):
            raise ValueError(f"address needs a hex string, got {value!r}")
        return normalize_address(value)[2:].rjust(_WORD_HEX, "0")
    if abi_type == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"bool needs a bool, got {value!r}")
        return f"{int(value):064x}"
    if abi_type == "bytes32":
        if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]{64}", value):
            raise ValueError(f"bytes32 needs 0x + 64 hex digits, got {value!r}")
        return value[2:].lower()
    raise ValueError(f"unsupported ABI type {abi_type!r}")


def encode_args(types: Sequence[str], values: Sequence[AbiValue]) -> str:
    """The head-only encoding of static ``values`` (hex, no ``0x``)."""
    if len(types) != len(values):
        raise ValueError(f"{len(types)} types but {len(values)} values")
    return "".join(encode_word(t, v) for t, v in zip(types, values, strict=True))


def encode_call(selector: str, signature: str, values: Sequence[AbiValue]) -> str:
    """Calldata ``0x<selector><args>`` for ``signature`` (whose selector the caller supplies)."""
    if not re.fullmatch(r"0x[0-9a-fA-F]{8}", selector):
        raise ValueError(f"not a 4-byte selector: {selector!r}")
    return selector.lower() + encode_args(arg_types(signature), values)


def _strip(data: str) -> str:
    if not isinstance(data, str) or not data.startswith("0x"):
        raise ValueError(f"not hex data: {data!r}")
    body = data[2:]
    if len(body) % _WORD_HEX:
        raise ValueError(f"hex data is not a whole number of 32-byte words: {data!r}")
    return body


def decode_words(data: str) -> list[int]:
    """Return data (or log data) split into unsigned 32-byte words."""
    body = _strip(data)
    return [int(body[i : i + _WORD_HEX], 16) for i in range(0, len(body), _WORD_HEX)]


def decode_uint256(data: str) -> int:
    """The single uint256 an ``eth_call`` of a one-value view returns."""
    words = decode_words(data)
    if len(words) != 1:
        raise ValueError(f"expected one 32-byte word, got {len(words)}")
    return words[0]


def topic_to_address(topic: str) -> str:
    """An indexed ``address`` topic as a lowercase address."""
    body = _strip(topic)
    if len(body) != _WORD_HEX or int(body[:24], 16):
        raise ValueError(f"not an address topic: {topic!r}")
    return "0x" + body[24:].lower()
