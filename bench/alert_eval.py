"""Benchmark of the alert evaluator: ChainEvents/s with 100 mixed rules, in one CPython process.

Prints, for the same pre-built event stream: the evaluator with 0 rules (the baseline: the loop
and the evaluator's fixed cost), with 100 rules (indexed, as in production), and with the same
100 rules visited naively (every rule for every event). Target: >= 10,000 events/s with 100 rules.

    .venv/bin/python bench/alert_eval.py [--events 100000] [--repeat 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
from decimal import Decimal

from streams.alerts.evaluate import Evaluator
from streams.alerts.rules import RuleSet, parse_rules
from streams.enrich.model import ChainEvent, LagReading, ReorgEvent

ZERO = "0x" + "00" * 20
LABELS = ("whale", "cex", "bridge", "mixer", "team", "treasury")


def address(i: int) -> str:
    return f"0x{i:040x}"


def build_rules(rng: random.Random, n_addresses: int, tokens: list[str]) -> RuleSet:
    """100 rules of mixed kinds (24 windowed), over the same address/token/label space."""
    rules: list[str] = []

    def add(when: str, tier: str = "instant") -> None:
        rules.append(f"  - id: r{len(rules)}\n    tier: {tier}\n    when: {{{when}}}\n")

    def pick() -> str:
        return address(rng.randrange(n_addresses))

    for _ in range(20):
        add(f"event: transfer, from: {pick()}, min_amount: {rng.randrange(10**6)}")
    for _ in range(10):
        add(f"event: transfer, to: [{pick()}, {pick()}]", tier="finalized")
    for _ in range(8):
        add(f"event: transfer, address: [{pick()}, {pick()}, {pick()}]")
    for label in LABELS:
        add(f"event: transfer, label: {label}, min_usd: {rng.randrange(1000, 100000)}")
        add(f"event: transfer, from_label: {label}, to_label: [{rng.choice(LABELS)}, {rng.choice(LABELS)}]")
    for token in tokens[:10]:
        add(f"event: transfer, token: {token}, min_amount: {rng.randrange(10**7, 10**9)}")
    add("event: transfer, action: mint")
    add("event: transfer, action: burn, min_amount: 1000000")
    add("event: transfer, min_usd: 250000")
    add("event: transfer, max_amount: 0")
    add("event: stake_change, action: delegate, min_amount: 100000000")
    add("event: stake_change, action: undelegate")
    for i, token in enumerate(tokens[:8]):
        add(f"event: transfer, token: {token}, window: {{blocks: {10 + i}, count_over: 40, group_by: from}}")
        add(f"event: transfer, token: {token}, window: {{blocks: 50, sum_over: {10**10}, group_by: to}}")
    for label in LABELS:
        add(f"event: transfer, label: {label}, window: {{blocks: 20, count_over: 30, group_by: token}}")
    add("event: transfer, window: {blocks: 5, count_over: 400, group_by: token}")
    add("event: transfer, action: mint, window: {blocks: 100, sum_over: 1000000000000}")
    add("event: reorg, min_depth: 2")
    add("event: reorg")
    add("event: lag, min_blocks: 10")
    add("event: lag, min_seconds: 60")
    while len(rules) < 100:
        add(f"event: transfer, from: {pick()}, to: {pick()}")
    assert len(rules) == 100, len(rules)
    return RuleSet(tuple(parse_rules("rules:\n" + "".join(rules), "bench.yaml")))


def build_events(rng: random.Random, count: int, n_addresses: int, tokens: list[str]) -> list[ChainEvent]:
    labelled = {address(i): frozenset({rng.choice(LABELS)}) for i in rng.sample(range(n_addresses), 500)}
    events = []
    for n in range(count):
        number, log_index = 1000 + n // 50, n % 50
        frm, to = address(rng.randrange(n_addresses)), address(rng.randrange(n_addresses))
        roll = rng.random()
        if roll < 0.9:
            kind, action = "transfer", "transfer"
        elif roll < 0.94:
            kind, action, frm = "transfer", "mint", ZERO
        elif roll < 0.97:
            kind, action, to = "transfer", "burn", ZERO
        else:
            kind, action = "stake_change", rng.choice(("delegate", "undelegate"))
        amount = int(rng.paretovariate(1.2) * 10**6)
        events.append(
            ChainEvent(
                event_type=kind,
                key=f"1:{kind}:{number}:{log_index}",
                chain_id=1,
                block_number=number,
                block_hash=f"0x{number:064x}",
                timestamp=1_700_000_000 + number,
                log_index=log_index,
                transaction_hash=f"0x{n:064x}",
                token=rng.choice(tokens),
                from_address=frm,
                to_address=to,
                amount=amount,
                action=action,
                decimals=6,
                usd_value=Decimal(amount) / 10**6 if rng.random() < 0.8 else None,
                from_labels=labelled.get(frm, frozenset()),
                to_labels=labelled.get(to, frozenset()),
            )
        )
    return events


def run(evaluator: Evaluator, events: list[ChainEvent]) -> tuple[float, int]:
    start = time.perf_counter()
    matches = 0
    evaluate = evaluator.evaluate
    for n, event in enumerate(events):
        matches += len(evaluate(event))
        if n % 5000 == 4999:  # a lag reading and, now and then, a reorg of the last 2 blocks
            matches += len(evaluator.on_lag(LagReading(f"1:lag:{n}", 1, event.block_number, n % 20, 1.0)))
            hashes = (f"0x{event.block_number + 1:064x}", f"0x{event.block_number + 2:064x}")
            matches += len(evaluator.on_reorg(ReorgEvent(f"reorg-{n}", 1, event.block_number, 2, hashes, 0)))
    return time.perf_counter() - start, matches


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    n_addresses = 5000
    tokens = [address(10**9 + i) for i in range(20)]
    rules = build_rules(rng, n_addresses, tokens)
    events = build_events(rng, args.events, n_addresses, tokens)
    windowed = sum(r.window is not None for r in rules)
    print(f"{len(events)} events ({len(events) // 50} blocks), best of {args.repeat} runs")
    results: dict[str, tuple[float, int]] = {}
    configs: list[tuple[str, RuleSet, bool]] = [
        ("0 rules (baseline)", RuleSet(), True),
        (f"100 rules, indexed ({windowed} windowed)", rules, True),
        ("100 rules, naive (every rule, every event)", rules, False),
    ]
    for name, ruleset, use_index in configs:
        best, matches, entries = float("inf"), 0, 0
        for _ in range(args.repeat):
            evaluator = Evaluator(ruleset, 1, use_index=use_index)
            seconds, matches = run(evaluator, events)
            best = min(best, seconds)
            entries = evaluator.window_entries()
        results[name] = (len(events) / best, matches)
        print(
            f"  {name:<45} {len(events) / best:>10,.0f} events/s"
            f"  {matches:>7} matches  {entries} window entries"
        )
    rates = list(results.values())
    assert rates[1][1] == rates[2][1], "indexed and naive evaluation disagree"
    print(f"  indexed = {rates[1][0] / rates[0][0]:.2f} x baseline, {rates[1][0] / rates[2][0]:.1f} x naive")


if __name__ == "__main__":
    main()
