"""The Extend selection on hand-made costs: growth by steps, extension of a chosen index, the stopping rules,
the budgets, and the reasons it gives. Pure."""

from __future__ import annotations

from dataclasses import replace

from pgops.advisor.model import Candidate
from pgops.advisor.select import Baseline, Budget, Problem, Stop, choose

T = ("public", "t")
MB = 1024 * 1024
LOOSE = Budget(max_indexes=10, max_size=10**12, min_share=0.01, min_share_per_mb=0.0005)


def index(*columns: str, include: tuple[str, ...] = ()) -> Candidate:
    return Candidate(T, columns, include)


def problem(
    baselines: dict[int, Baseline],
    costs: dict[int, dict[Candidate, float]],
    sizes: dict[Candidate, int],
    seeds: list[Candidate],
    extensions: dict[Candidate, list[Candidate]] | None = None,
    overhead: dict[Candidate, float] | None = None,
) -> Problem:
    """A statement's cost under a set is the cheapest any one index of the set gives it."""

    def cost(number: int, config: frozenset[Candidate]) -> float:
        return min([baselines[number].cost, *(costs[number].get(c, baselines[number].cost) for c in config)])

    return Problem(
        baselines=baselines,
        seeds=seeds,
        statements_of=lambda c: [n for n in costs if c in costs[n]],
        cost=cost,
        size=lambda c: sizes[c],
        write_overhead_ms=lambda c: (overhead or {}).get(c, 0.0),
        extensions=lambda c: (extensions or {}).get(c, []),
    )


def test_a_chosen_index_is_extended_by_a_column_when_that_saves_more_per_byte():
    a, ab = index("a"), index("a", "b")
    baselines = {0: Baseline(1000.0, 100.0), 1: Baseline(1000.0, 100.0)}
    costs = {0: {a: 50.0, ab: 5.0}, 1: {a: 60.0, ab: 5.0}}
    selection = choose(problem(baselines, costs, {a: MB, ab: MB + MB // 4}, [a], {a: [ab]}), LOOSE)
    assert [c.candidate for c in selection.chosen] == [ab]
    (choice,) = selection.chosen
    assert [s.number for s in choice.served] == [0, 1] and choice.saved_ms == 950.0 + 950.0
    assert selection.rejected[0].reason == f"extended into {ab.describe()}"


def test_one_two_column_index_beats_a_pile_of_single_column_ones():
    a, b, ab = index("a"), index("b"), index("a", "b")
    baselines = {0: Baseline(1000.0, 100.0), 1: Baseline(1000.0, 100.0)}
    costs = {0: {a: 60.0, ab: 5.0}, 1: {b: 60.0, ab: 10.0}}
    selection = choose(problem(baselines, costs, {a: 8 * MB, b: 8 * MB, ab: 9 * MB}, [a, b, ab]), LOOSE)
    assert [c.candidate for c in selection.chosen] == [ab]
    reasons = {r.index: r.reason for r in selection.rejected}
    assert reasons[a.describe()] == reasons[b.describe()] == "its statements are already served by the chosen indexes"


def test_growth_stops_when_a_step_saves_too_little_per_mb_or_in_all():
    small, big, tiny = index("a"), index("b"), index("c")
    baselines = {0: Baseline(6000.0, 100.0), 1: Baseline(3000.0, 100.0), 2: Baseline(60.0, 100.0)}
    # `big` saves 11% of the workload with 400 MB (0.03% per MB); `tiny` saves 6 ms of 9 s (0.07%)
    costs = {0: {small: 10.0}, 1: {big: 66.7}, 2: {tiny: 90.0}}
    sizes = {small: MB, big: 400 * MB, tiny: 8192}
    selection = choose(problem(baselines, costs, sizes, [small, big, tiny]), LOOSE)
    assert [c.candidate for c in selection.chosen] == [small]
    reasons = {r.index: r.reason for r in selection.rejected}
    assert "per MB (min_saving_per_mb)" in reasons[big.describe()]
    assert "less than 1.0% (min_saving)" in reasons[tiny.describe()]
    assert selection.stop is Stop.per_mb


def test_where_time_was_measured_a_step_must_save_its_share_of_the_database_at_any_scale():
    """`big` saves 11% of the workload: too little in a database it would grow by 20%, enough in one it grows
    by 2% (ten times the data, the same index), where the per-MB rule alone would refuse it at 0.03% per MB."""
    small, big = index("a"), index("b")
    baselines = {0: Baseline(6000.0, 100.0), 1: Baseline(3000.0, 100.0)}
    costs = {0: {small: 10.0}, 1: {big: 66.7}}
    sizes = {small: MB, big: 400 * MB}
    relative = Budget(10, 10**12, min_share=0.01, min_share_per_mb=0.0005, min_share_per_size=1.0)
    in_2gb = choose(problem(baselines, costs, sizes, [small, big]), replace(relative, database_bytes=2000 * MB))
    assert [c.candidate for c in in_2gb.chosen] == [small]
    reasons = {r.index: r.reason for r in in_2gb.rejected}
    assert reasons[big.describe()] == (
        "saves 11.10% of the workload for 400.0 MB, 20.00% of the database's size: less than 1x that "
        "(min_saving_per_size)"
    )
    in_20gb = choose(problem(baselines, costs, sizes, [small, big]), replace(relative, database_bytes=20000 * MB))
    assert {c.candidate for c in in_20gb.chosen} == {small, big}
    unknown_size = choose(problem(baselines, costs, sizes, [small, big]), relative)  # falls back to per MB
    assert [c.candidate for c in unknown_size.chosen] == [small]


def test_budgets_and_write_overhead_are_respected_and_named():
    a, b, c, d = index("a"), index("b"), index("c"), index("d")
    baselines = {0: Baseline(1000.0, 100.0), 1: Baseline(500.0, 100.0), 2: Baseline(100.0, 100.0), 3: Baseline(1.0, 1)}
    costs = {0: {a: 10.0}, 1: {b: 10.0}, 2: {c: 10.0}, 3: {d: 1.0}}
    sizes = {a: 5 * MB, b: MB, c: MB, d: MB}
    one = Budget(max_indexes=1, max_size=10**12, min_share=0.01, min_share_per_mb=0.0)
    selection = choose(problem(baselines, costs, sizes, [a, b, c, d], overhead={c: 500.0}), one)
    assert [x.candidate for x in selection.chosen] == [b]  # 450 ms per MB beats 900 ms per 5 MB
    reasons = {r.index: r.reason for r in selection.rejected}
    assert "--max-indexes" in reasons[a.describe()]
    assert "write overhead" in reasons[c.describe()]
    assert "planner would not use it" in reasons[d.describe()]
    small_budget = Budget(max_indexes=5, max_size=3 * MB, min_share=0.01, min_share_per_mb=0.0)
    selection = choose(problem(baselines, costs, sizes, [a, b]), small_budget)
    assert [x.candidate for x in selection.chosen] == [b]
    assert "--max-size" in selection.rejected[0].reason


def _applied(first: Problem, chosen: frozenset[Candidate]) -> Problem:
    """The same workload on a database where `chosen` was built: what a second run sees. Weights are plan cost
    (a statements file: one call each), and the thresholds' reference is worked out as `first`'s is."""
    costs = {n: first.cost(n, chosen) for n in first.baselines}
    return Problem(
        baselines={n: Baseline(costs[n], costs[n]) for n in first.baselines},
        seeds=[s for s in first.seeds if s not in chosen],
        statements_of=first.statements_of,
        cost=lambda n, config: first.cost(n, chosen | config),
        size=first.size,
        write_overhead_ms=first.write_overhead_ms,
        extensions=first.extensions,
        workload_ms=first.reference(costs) if first.reference else first.workload_ms,
        reference=first.reference,
    )


def _table_costs(table: dict[tuple[int, frozenset[Candidate]], float]):
    """A cost function from a table of (statement, the indexes that matter to it) → cost."""

    def cost(number: int, config: frozenset[Candidate]) -> float:
        return table[(number, frozenset(x for x in config if (number, frozenset({x})) in table))]

    return cost


def test_a_run_on_its_own_applied_choice_takes_nothing_more():
    """`b` alone changes no plan, so it leaves the queue when first costed; with `a` chosen it cuts statement
    0 by 40% more. A second run, on a database where `a` is built, costs `b` against `a` and would propose it:
    the selection costs every step against its final set before it stops, as that run would."""
    a, b, c = index("a"), index("b"), Candidate(("public", "u"), ("c",))
    baselines = {0: Baseline(100.0, 100.0), 1: Baseline(100.0, 100.0)}
    first = Problem(
        baselines=baselines,
        seeds=[a, b, c],
        statements_of=lambda x: [0] if x.table == T else [1],
        cost=_table_costs(
            {
                (0, frozenset()): 100.0,
                (0, frozenset({a})): 50.0,
                (0, frozenset({b})): 100.0,
                (0, frozenset({a, b})): 10.0,
                (1, frozenset()): 100.0,
                (1, frozenset({c})): 60.0,
            }
        ),
        size=lambda _: MB,
        write_overhead_ms=lambda _: 0.0,
        workload_ms=200.0,
    )
    selection = choose(first, LOOSE)
    chosen = frozenset(choice.candidate for choice in selection.chosen)
    assert chosen == {a, b, c}
    assert choose(_applied(first, chosen), LOOSE).chosen == []


def test_thresholds_follow_the_cost_reference_down_to_where_a_second_run_would_judge():
    """Plan cost as weight: statement 0's plan costs 100,000 with no index (a nested loop the planner expects to
    be huge), its tables 1,000 to scan. `a` cuts it to 1,000; `b` then saves 30 of statement 1's 60, under 1% of
    the first reference (101,060) but over 1% of the workload once `a` is built (2,030), where a second run
    judges it. The selection lowers its reference as its set lowers the costs, so it takes `b` now."""
    a, b = index("a"), Candidate(("public", "u"), ("b",))
    floors = {0: 1000.0, 1: 30.0}

    def reference(costs):
        return sum(max(floors[n], costs[n]) for n in floors)

    first = Problem(
        baselines={0: Baseline(100000.0, 100000.0), 1: Baseline(60.0, 60.0)},
        seeds=[a, b],
        statements_of=lambda x: [0] if x.table == T else [1],
        cost=_table_costs(
            {
                (0, frozenset()): 100000.0,
                (0, frozenset({a})): 1000.0,
                (1, frozenset()): 60.0,
                (1, frozenset({b})): 30.0,
            }
        ),
        size=lambda _: 8192,
        write_overhead_ms=lambda _: 0.0,
        workload_ms=reference({0: 100000.0, 1: 60.0}),
        reference=reference,
    )
    selection = choose(first, LOOSE)
    chosen = frozenset(choice.candidate for choice in selection.chosen)
    assert chosen == {a, b}
    assert selection.total_ms == 1000.0 + 30.0
    assert choose(_applied(first, chosen), LOOSE).chosen == []
