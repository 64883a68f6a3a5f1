"""The pure traffic planner: never plans what could revert, deterministic per seed, honours the mix."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.devchain.plan import DEFAULT_VALIDATORS, PlanState, TrafficMix, TxKind, TxRequest, plan_block
from tracekit.errors import ConfigError

ACCOUNTS = tuple(f"0x{i:040x}" for i in range(1, 7))
SPENDING = (TxKind.TRANSFER, TxKind.BURN, TxKind.DELEGATE)

weight = st.one_of(st.just(0.0), st.floats(min_value=0, max_value=100, allow_nan=False))
mixes = st.builds(
    lambda w, n: TrafficMix(
        transfer=w[0], mint=w[1], burn=w[2], delegate=w[3], undelegate=w[4], eth_transfer=w[5], tx_per_block=n
    ),
    st.tuples(weight, weight, weight, weight, weight, weight).filter(lambda w: sum(w) > 0),
    st.integers(min_value=0, max_value=60),
)
amounts = st.integers(min_value=0, max_value=10**24)


@st.composite
def states(draw: st.DrawFn) -> PlanState:
    accounts = ACCOUNTS[: draw(st.integers(min_value=1, max_value=len(ACCOUNTS)))]
    balances = {a: draw(amounts) for a in accounts}
    delegations = {(a, v): draw(st.sampled_from([0, 0, 1, 10**18, 5 * 10**20])) for a in accounts
                   for v in DEFAULT_VALIDATORS}
    return PlanState(DEFAULT_VALIDATORS, balances, delegations)


def accounts_of(state: PlanState) -> tuple[str, ...]:
    return tuple(state.balances)


def assert_safe_in_any_order(start: PlanState, block: list[TxRequest]) -> None:
    """What each sender spends in the block is covered by what it had before the block."""
    spent: Counter[str] = Counter()
    undelegated: Counter[tuple[str, str]] = Counter()
    for tx in block:
        assert tx.amount >= 1
        if tx.kind in SPENDING:
            spent[tx.sender] += tx.amount
        elif tx.kind is TxKind.UNDELEGATE:
            assert tx.counterparty is not None
            undelegated[(tx.sender, tx.counterparty)] += tx.amount
    for sender, total in spent.items():
        assert total <= start.balances.get(sender, 0), (sender, total)
    for pair, total in undelegated.items():
        assert total <= start.delegations.get(pair, 0), (pair, total)


@settings(max_examples=200, deadline=None)
@given(mix=mixes, state=states(), seed=st.integers(min_value=0, max_value=2**32), n_blocks=st.integers(1, 6))
def test_never_plans_more_than_the_planned_balances(
    mix: TrafficMix, state: PlanState, seed: int, n_blocks: int
) -> None:
    rng = random.Random(seed)
    accounts = accounts_of(state)
    for _ in range(n_blocks):
        start = state.copy()
        block = plan_block(mix, rng, accounts, state)
        assert len(block) == mix.tx_per_block
        assert_safe_in_any_order(start, block)
        replay = start.copy()
        for tx in block:  # in plan order too: apply() raises on any overdraft
            replay.apply(tx)
        assert replay == state
        assert all(v >= 0 for v in state.balances.values())
        assert all(v >= 0 for v in state.delegations.values())
        for tx in block:
            assert tx.sender in accounts
            if tx.kind in (TxKind.DELEGATE, TxKind.UNDELEGATE):
                assert tx.counterparty in DEFAULT_VALIDATORS
            elif tx.kind is TxKind.BURN:
                assert tx.counterparty is None
            else:
                assert tx.counterparty in accounts


@settings(max_examples=50, deadline=None)
@given(mix=mixes, state=states(), seed=st.integers(min_value=0, max_value=2**32))
def test_same_seed_same_plan(mix: TrafficMix, state: PlanState, seed: int) -> None:
    def run() -> list[list[TxRequest]]:
        s, rng = state.copy(), random.Random(seed)
        return [plan_block(mix, rng, accounts_of(s), s) for _ in range(3)]

    assert run() == run()


def test_different_seeds_differ() -> None:
    mix = TrafficMix(tx_per_block=50)
    state = PlanState(DEFAULT_VALIDATORS, {a: 10**24 for a in ACCOUNTS})
    one = plan_block(mix, random.Random(1), ACCOUNTS, state.copy())
    two = plan_block(mix, random.Random(2), ACCOUNTS, state.copy())
    assert one != two


def test_mix_proportions_are_roughly_respected() -> None:
    mix = TrafficMix(
        transfer=40, mint=10, burn=5, delegate=20, undelegate=10, eth_transfer=15, tx_per_block=200
    )
    state = PlanState(
        DEFAULT_VALIDATORS,
        {a: 10**30 for a in ACCOUNTS},
        {(a, v): 10**30 for a in ACCOUNTS for v in DEFAULT_VALIDATORS},
    )
    rng = random.Random(42)
    counts: Counter[TxKind] = Counter()
    for _ in range(50):
        counts.update(tx.kind for tx in plan_block(mix, rng, ACCOUNTS, state))
    total = sum(counts.values())
    expected = {k: w / sum(mix.weights().values()) for k, w in mix.weights().items()}
    for kind, share in expected.items():
        assert abs(counts[kind] / total - share) < 0.02, (kind, counts[kind] / total, share)


def test_impossible_kinds_fall_back_to_mints() -> None:
    """With no balances and no delegations, only mints and ETH transfers can be planned."""
    mix = TrafficMix(transfer=1, mint=0, burn=1, delegate=1, undelegate=1, eth_transfer=0, tx_per_block=30)
    state = PlanState(DEFAULT_VALIDATORS)
    block = plan_block(mix, random.Random(0), ACCOUNTS, state)
    assert {tx.kind for tx in block} == {TxKind.MINT}
    assert sum(state.balances.values()) == sum(tx.amount for tx in block)


def test_zero_weight_kinds_are_never_planned() -> None:
    mix = TrafficMix(transfer=1, mint=0, burn=0, delegate=0, undelegate=0, eth_transfer=1, tx_per_block=100)
    state = PlanState(DEFAULT_VALIDATORS, {a: 10**24 for a in ACCOUNTS})
    kinds = {tx.kind for tx in plan_block(mix, random.Random(3), ACCOUNTS, state)}
    assert kinds == {TxKind.TRANSFER, TxKind.ETH_TRANSFER}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transfer": -1},
        {"transfer": 0, "mint": 0, "burn": 0, "delegate": 0, "undelegate": 0, "eth_transfer": 0},
        {"tx_per_block": -1},
        {"mint": float("nan")},
    ],
)
def test_bad_mix_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        TrafficMix(**kwargs)  # type: ignore[arg-type]


def test_needs_accounts() -> None:
    with pytest.raises(ConfigError):
        plan_block(TrafficMix(), random.Random(0), (), PlanState())


def test_apply_rejects_an_overdraft() -> None:
    state = PlanState(DEFAULT_VALIDATORS, {ACCOUNTS[0]: 5})
    with pytest.raises(ValueError, match="burn"):
        state.apply(TxRequest(TxKind.BURN, ACCOUNTS[0], None, 6))
    with pytest.raises(ValueError, match="undelegate"):
        state.apply(TxRequest(TxKind.UNDELEGATE, ACCOUNTS[0], DEFAULT_VALIDATORS[0], 1))
