"""The committed contract artifacts written by ``build_contracts.js`` (so running needs no compiler)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operators.devchain.abi import AbiValue, arg_types, encode_args, encode_call
from tracekit.errors import TraceError

DEVCHAIN_DIR = Path(__file__).resolve().parent
CONTRACTS_DIR = DEVCHAIN_DIR / "contracts"
ARTIFACTS_DIR = DEVCHAIN_DIR / "artifacts"
REBUILD_COMMAND = "node operators/devchain/build_contracts.js"  # from the repository root
BUILD_SCRIPT = DEVCHAIN_DIR / "build_contracts.js"
CONTRACT_NAMES = ("TraceToken", "TraceStaking")


@dataclass(frozen=True)
class ContractArtifact:
    """ABI, creation bytecode and precomputed selectors/topics of one compiled contract."""

    name: str
    source_file: Path
    source_sha256: str
    solc_version: str
    abi: tuple[Mapping[str, Any], ...]
    bytecode: str
    selectors: Mapping[str, str]
    event_topics: Mapping[str, str]

    def selector(self, signature: str) -> str:
        try:
            return self.selectors[signature]
        except KeyError:
            raise KeyError(f"{self.name} has no function {signature}") from None

    def topic(self, signature: str) -> str:
        try:
            return self.event_topics[signature]
        except KeyError:
            raise KeyError(f"{self.name} has no event {signature}") from None

    def calldata(self, signature: str, *args: AbiValue) -> str:
        """Calldata for ``signature`` (e.g. ``"transfer(address,uint256)"``) with ``args``."""
        return encode_call(self.selector(signature), signature, args)

    def deploy_data(self, *args: AbiValue) -> str:
        """Creation bytecode followed by the encoded constructor arguments."""
        types: Sequence[str] = ()
        for item in self.abi:
            if item.get("type") == "constructor":
                types = tuple(str(i["type"]) for i in item.get("inputs", []))
        return self.bytecode + encode_args(types, args)


@functools.cache
def load_artifact(name: str) -> ContractArtifact:
    """The committed artifact of contract ``name``; TraceError naming the rebuild command if unusable."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
        artifact = ContractArtifact(
            name=raw["contractName"],
            source_file=DEVCHAIN_DIR / raw["sourceFile"],
            source_sha256=raw["sourceSha256"],
            solc_version=raw["solcVersion"],
            abi=tuple(raw["abi"]),
            bytecode=raw["bytecode"],
            selectors=dict(raw["selectors"]),
            event_topics=dict(raw["eventTopics"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TraceError(
            f"contract artifact {path} is missing or invalid ({exc}); run `{REBUILD_COMMAND}`"
        ) from exc
    for signature in artifact.selectors:
        arg_types(signature)  # all selectors must be canonical signatures
    return artifact


def token_artifact() -> ContractArtifact:
    return load_artifact("TraceToken")


def staking_artifact() -> ContractArtifact:
    return load_artifact("TraceStaking")
