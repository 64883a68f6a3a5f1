"""The pure half of the traffic generator: plan one block's transactions from a seeded RNG.

The planner keeps its own view of token balances and delegations (:class:`PlanState`) and only
plans what cannot revert *whatever order the block ends up in*: within a block, an account spends
at most its balance at the start of the block (credits it receives in the same block count only
from the next block on), and a delegator undelegates at most what it had delegated before the
block. Plans that are impossible (nothing to burn, nothing delegated) fall back to a mint, which
always succeeds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum

from tracekit.errors import ConfigError

TOKEN_UNIT = 10**18
MAX_MINT = 1_000 * TOKEN_UNIT
MAX_ETH_VALUE = 10**15  # wei; accounts hold plenty of ETH on the dev chain
SPEND_DIVISOR = 20  # a transfer/burn/delegate spends at most 1/20 of the available balance

# Validators are plain addresses to the staking contract; these are easy to spot in data.
DEFAULT_VALIDATORS: tuple[str, ...] = tuple(f"0x{'a1' * 19}{i:02x}" for i in range(1, 5))


class TxKind(StrEnum):
    TRANSFER = "transfer"
    MINT = "mint"
    BURN = "burn"
    DELEGATE = "delegate"
    UNDELEGATE = "undelegate"
    ETH_TRANSFER = "eth_transfer"


@dataclass(frozen=True)
class TrafficMix:
    """Relative weights of each kind of transaction, and how many to send per block."""

    transfer: float = 35.0
    mint: float = 10.0
    burn: float = 5.0
    delegate: float = 20.0
    undelegate: float = 10.0
    eth_transfer: float = 20.0
    tx_per_block: int = 20

    def __post_init__(self) -> None:
        weights = self.weights()
        if any(not math.isfinite(w) or w < 0 for w in weights.values()):
            raise ConfigError(f"traffic weights must be >= 0, got {dict(weights)}")
        if sum(weights.values()) <= 0:
            raise ConfigError("at least one traffic weight must be > 0")
        per_block = self.tx_per_block
        if isinstance(per_block, bool) or not isinstance(per_block, int) or per_block < 0:
            raise ConfigError(f"tx_per_block must be an int >= 0, got {self.tx_per_block!r}")

    def weights(self) -> dict[TxKind, float]:
        return {
            TxKind(f.name): float(getattr(self, f.name)) for f in fields(self) if f.name != "tx_per_block"
        }


@dataclass(frozen=True)
class TxRequest:
    """One planned transaction, before encoding.

    ``counterparty`` is the recipient (transfer, mint, eth_transfer) or the validator (delegate,
    undelegate), None for a burn. ``amount`` is in token base units, or wei for eth_transfer.
    """

    kind: TxKind
    sender: str
    counterparty: str | None
    amount: int


@dataclass
class PlanState:
    """The planner's view of the chain: token balances and (delegator, validator) stakes."""

    validators: tuple[str, ...] = DEFAULT_VALIDATORS
    balances: dict[str, int] = field(default_factory=dict)
    delegations: dict[tuple[str, str], int] = field(default_factory=dict)

    def copy(self) -> PlanState:
        return PlanState(self.validators, dict(self.balances), dict(self.delegations))

    def apply(self, tx: TxRequest) -> None:
        """The effect of ``tx`` once mined; ValueError if it would revert in this state."""
        if tx.kind is TxKind.ETH_TRANSFER:
            return
        if tx.kind is TxKind.MINT:
            to = _counterparty(tx)
            self.balances[to] = self.balances.get(to, 0) + tx.amount
            return
        balance = self.balances.get(tx.sender, 0)
        if tx.kind is TxKind.UNDELEGATE:
            key = (tx.sender, _counterparty(tx))
            delegated = self.delegations.get(key, 0)
            if tx.amount > delegated or tx.amount <= 0:
                raise ValueError(f"undelegate {tx.amount} > delegated {delegated}: {tx}")
            self.delegations[key] = delegated - tx.amount
            self.balances[tx.sender] = balance + tx.amount
            return
        if tx.amount > balance:
            raise ValueError(f"{tx.kind} {tx.amount} > balance {balance}: {tx}")
        self.balances[tx.sender] = balance - tx.amount
        if tx.kind is TxKind.TRANSFER:
            to = _counterparty(tx)
            self.balances[to] = self.balances.get(to, 0) + tx.amount
        elif tx.kind is TxKind.DELEGATE:
            key = (tx.sender, _counterparty(tx))
            self.delegations[key] = self.delegations.get(key, 0) + tx.amount


def _counterparty(tx: TxRequest) -> str:
    if tx.counterparty is None:
        raise ValueError(f"{tx.kind} needs a counterparty: {tx}")
    return tx.counterparty


def _other(rng: random.Random, accounts: Sequence[str], sender: str) -> str:
    others = [a for a in accounts if a != sender]
    return rng.choice(others) if others else sender


def _spend(rng: random.Random, available: int) -> int:
    return rng.randint(1, max(1, available // SPEND_DIVISOR))


def plan_block(
    mix: TrafficMix, rng: random.Random, accounts: Sequence[str], state: PlanState
) -> list[TxRequest]:
    """Plan ``mix.tx_per_block`` transactions from ``accounts`` and update ``state`` as if all mined.

    Deterministic for a given ``rng`` state, ``accounts`` order and ``state``.
    """
    if not accounts:
        raise ConfigError("the traffic planner needs at least one account")
    if not state.validators:
        raise ConfigError("the traffic planner needs at least one validator")
    weights = mix.weights()
    kinds = list(weights)
    chosen = rng.choices(kinds, weights=[weights[k] for k in kinds], k=mix.tx_per_block)
    # Spendable now: start-of-block values minus what this block already spends. Credits wait.
    spendable = {a: state.balances.get(a, 0) for a in accounts}
    undelegatable = {
        (a, v): state.delegations.get((a, v), 0) for a in accounts for v in state.validators
    }
    planned: list[TxRequest] = []
    for kind in chosen:
        tx = _plan_one(kind, rng, accounts, state.validators, spendable, undelegatable)
        planned.append(tx)
        if tx.kind in (TxKind.TRANSFER, TxKind.BURN, TxKind.DELEGATE):
            spendable[tx.sender] -= tx.amount
        elif tx.kind is TxKind.UNDELEGATE:
            undelegatable[(tx.sender, _counterparty(tx))] -= tx.amount
    for tx in planned:
        state.apply(tx)
    return planned


def _plan_one(
    kind: TxKind,
    rng: random.Random,
    accounts: Sequence[str],
    validators: Sequence[str],
    spendable: Mapping[str, int],
    undelegatable: Mapping[tuple[str, str], int],
) -> TxRequest:
    if kind is TxKind.ETH_TRANSFER:
        sender = rng.choice(accounts)
        return TxRequest(kind, sender, _other(rng, accounts, sender), rng.randint(1, MAX_ETH_VALUE))
    if kind in (TxKind.TRANSFER, TxKind.BURN, TxKind.DELEGATE):
        funded = [a for a in accounts if spendable[a] > 0]
        if funded:
            sender = rng.choice(funded)
            amount = _spend(rng, spendable[sender])
            if kind is TxKind.TRANSFER:
                return TxRequest(kind, sender, _other(rng, accounts, sender), amount)
            if kind is TxKind.BURN:
                return TxRequest(kind, sender, None, amount)
            return TxRequest(kind, sender, rng.choice(validators), amount)
    elif kind is TxKind.UNDELEGATE:
        stakes = [pair for pair, amount in undelegatable.items() if amount > 0]
        if stakes:
            delegator, validator = rng.choice(stakes)
            amount = rng.randint(1, undelegatable[(delegator, validator)])
            return TxRequest(kind, delegator, validator, amount)
    # MINT, or the fallback when the chosen kind has nothing to act on: always succeeds.
    return TxRequest(TxKind.MINT, rng.choice(accounts), rng.choice(accounts), rng.randint(1, MAX_MINT))
