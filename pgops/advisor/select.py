"""Choose indexes for the whole workload, not statement by statement: each statement weighs by its total
time, candidates are taken greedily by net benefit per byte (time saved minus write overhead), within the
index-count and size budgets, and a candidate whose statements an earlier pick already serves loses its
benefit. Pure: no database access."""

from __future__ import annotations

from dataclasses import dataclass, field

from pgops.advisor.model import Candidate, Rejection, TableInfo

# Planner costs of statements whose plans did not change move by rounding; a saving below this is noise.
NOISE = 0.01


@dataclass(frozen=True)
class Baseline:
    """A statement's weight and its plan cost with the existing indexes only."""

    total_time_ms: float
    cost: float


@dataclass
class Option:
    """A costed candidate: the statements' costs with this index alone, its size and write overhead."""

    candidate: Candidate
    size_bytes: int
    writes: int
    write_overhead_ms: float
    ends_hot_updates: bool
    after: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    option: Option
    saved_ms: float
    queries: tuple[int, ...]


@dataclass
class TableWrites:
    """Rows the workload's own INSERT and UPDATE statements wrote to a table (same window as its reads)."""

    inserted: int = 0
    updated: int = 0
    updated_columns: set[str] = field(default_factory=set)


def write_overhead(
    table: TableInfo, candidate: Candidate, writes: TableWrites, ms_per_entry: float
) -> tuple[int, float, bool]:
    """Index entries the workload's writes would add, their time, and whether the index would end HOT
    updates (an update that changes an indexed column writes a new entry in every index of the table)."""
    columns = {*candidate.columns, *candidate.include, *(c.column for c in candidate.predicate)}
    hot_share = table.n_tup_hot_upd / table.n_tup_upd if table.n_tup_upd else 1.0
    hot_updates = int(writes.updated * hot_share)
    entries = writes.inserted + writes.updated - hot_updates
    ends_hot = bool(columns & writes.updated_columns) and hot_updates > 0
    if ends_hot:
        entries += hot_updates * (table.index_count + 1)
    return entries, entries * ms_per_entry, ends_hot


def saving_ms(baseline: Baseline, current: float, after: float, min_saving: float) -> float:
    """Statement time an index saves, from the cost it cuts below the current best; nothing when that cut is
    below `min_saving` of the statement's original cost (planner noise, or an earlier pick already did it)."""
    if baseline.cost <= 0 or after >= current or (current - after) / baseline.cost < min_saving:
        return 0.0
    return baseline.total_time_ms * (current - after) / baseline.cost


def _best(picked: list[Option], baselines: dict[int, Baseline]) -> dict[int, float]:
    """Each statement's cost with the picked indexes: the cheapest plan one of them gives it."""
    best = {number: base.cost for number, base in baselines.items()}
    for option in picked:
        for number, after in option.after.items():
            if number in best:
                best[number] = min(best[number], after)
    return best


def _gain(
    option: Option, baselines: dict[int, Baseline], current: dict[int, float], min_saving: float
) -> tuple[float, tuple[int, ...]]:
    served = {
        number: saving_ms(baselines[number], current[number], after, min_saving)
        for number, after in option.after.items()
        if number in baselines
    }
    return sum(served.values()), tuple(n for n, saved in served.items() if saved > 0)


def choose(
    options: list[Option],
    baselines: dict[int, Baseline],
    *,
    max_indexes: int,
    max_size: int,
    min_saving: float,
) -> tuple[list[Choice], list[Rejection]]:
    """Greedy by net benefit per byte; after each pick, an earlier pick the new one makes pointless (its
    statements now get no worthwhile saving from it) is taken back, so one index per need remains."""
    remaining = list(options)
    picked: list[Option] = []
    rejected: list[Rejection] = []
    while remaining and len(picked) < max_indexes:
        current = _best(picked, baselines)
        used_size = sum(option.size_bytes for option in picked)
        scored = []
        for option in remaining:
            saved, queries = _gain(option, baselines, current, min_saving)
            net = saved - option.write_overhead_ms
            if queries and net > 0 and used_size + option.size_bytes <= max_size:
                scored.append((net / max(option.size_bytes, 1), net, option))
        if not scored:
            break
        scored.sort(key=lambda item: (-item[0], -item[1], item[2].candidate.describe()))
        new = scored[0][2]
        picked.append(new)
        remaining.remove(new)
        for earlier in list(picked[:-1]):
            others = _best([p for p in picked if p is not earlier], baselines)
            saved, _ = _gain(earlier, baselines, others, min_saving)
            if saved <= earlier.write_overhead_ms:
                picked.remove(earlier)
                reason = f"replaced by {new.candidate.describe()}, which serves its statements as well or better"
                rejected.append(Rejection(earlier.candidate.describe(), reason))
    final = _best(picked, baselines)
    chosen = []
    attributed: set[int] = set()
    for option in picked:
        # A statement's saving belongs to the (first) index its cheapest plan uses.
        queries = tuple(
            number
            for number, after in option.after.items()
            if number in baselines
            and number not in attributed
            and after <= final[number]
            and saving_ms(baselines[number], baselines[number].cost, after, min_saving) > 0
        )
        attributed.update(queries)
        saved = sum(saving_ms(baselines[n], baselines[n].cost, option.after[n], min_saving) for n in queries)
        chosen.append(Choice(option, saved, queries))
    used_size = sum(option.size_bytes for option in picked)
    for option in remaining:
        reason = _why_not(option, baselines, final, min_saving, chosen, used_size, max_indexes, max_size)
        rejected.append(Rejection(option.candidate.describe(), reason))
    return chosen, rejected


def _why_not(
    option: Option,
    baselines: dict[int, Baseline],
    current: dict[int, float],
    min_saving: float,
    chosen: list[Choice],
    used_size: int,
    max_indexes: int,
    max_size: int,
) -> str:
    alone = sum(
        saving_ms(baselines[n], baselines[n].cost, after, min_saving)
        for n, after in option.after.items()
        if n in baselines
    )
    now = sum(
        saving_ms(baselines[n], current[n], after, min_saving) for n, after in option.after.items() if n in baselines
    )
    if alone <= 0:
        return f"no statement got {min_saving:.0%} cheaper with it (the planner would not use it, or barely)"
    if alone <= option.write_overhead_ms:
        return f"write overhead ~{option.write_overhead_ms:.0f} ms outweighs the ~{alone:.0f} ms it saves"
    if now <= option.write_overhead_ms:
        serving = [c.option.candidate.describe() for c in chosen if set(c.queries) & set(option.after)]
        return "its statements are already served by " + (", ".join(serving) or "the chosen indexes")
    if len(chosen) >= max_indexes:
        return f"over the budget of {max_indexes} indexes (--max-indexes)"
    if used_size + option.size_bytes > max_size:
        return f"over the size budget of {max_size:,} bytes (--max-size)"
    return "not chosen"
