"""Choose one index set for the whole workload under a storage budget: the Extend algorithm (Schlosser, Kossmann,
Boissier 2019), which Kossmann et al. (PVLDB 2020) found gives the best cost per storage on TPC-H and TPC-DS.

The set grows one step at a time. A step is a new index (a generated candidate) or the extension of a chosen
one by a column, as a key column or an INCLUDE column; the step taken is the one with the best net saving per
byte it adds, where the saving is the statements' weighted time the planner says the whole set cuts (indexes
interact: a join may use two). Growth stops when the next step's saving is negligible in absolute terms
(`min_share` of the workload) or per megabyte (`Budget.per_mb`: a share per MB, or, where the weights are
measured time, a share of it below the share of the database's size the step adds), or at the budgets. Steps
are evaluated lazily (a step's last saving bounds its next one), which keeps the planner calls near one per step taken.
Pure: the costs come through the `Costs` callback.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pgops.advisor.model import Candidate, Rejection, TableInfo

# Planner costs of statements whose plans did not change move by rounding; a cut below this share is noise.
NOISE = 0.01
MB = 1024 * 1024


@dataclass(frozen=True)
class Baseline:
    """A statement's weight (its time, or its cost when no time was measured) and its plan cost with the
    existing indexes only."""

    total_time_ms: float
    cost: float


@dataclass(frozen=True)
class Budget:
    max_indexes: int
    max_size: int
    min_share: float  # a step must save at least this share of the workload's weight
    min_share_per_mb: float  # ... and at least this share per MB it adds
    # ... or, where set, at least this multiple of the share of the database's size it adds: alike at any scale
    min_share_per_size: float = 0.0
    database_bytes: int = 0

    @property
    def relative(self) -> bool:
        return self.min_share_per_size > 0 and self.database_bytes > 0

    @property
    def per_mb(self) -> float:
        """The share of the workload a step must save per MB it adds."""
        return self.min_share_per_size * MB / self.database_bytes if self.relative else self.min_share_per_mb


@dataclass(frozen=True)
class Step:
    """Add `new`, replacing `old` when it extends a chosen index."""

    new: Candidate
    old: Candidate | None = None


class Stop(StrEnum):
    nothing_left = "no step saves anything"
    negligible = "the next step's saving is negligible"
    per_mb = "the next step saves too little per MB"
    max_indexes = "the index budget is reached"
    max_size = "the size budget is reached"


@dataclass
class Problem:
    """What the selection needs to know, as callbacks into the costing layer."""

    baselines: dict[int, Baseline]
    seeds: list[Candidate]
    statements_of: Callable[[Candidate], Iterable[int]]  # the statements an index on its table could change
    cost: Callable[[int, frozenset[Candidate]], float]  # a statement's plan cost under a set of indexes
    size: Callable[[Candidate], int]
    write_overhead_ms: Callable[[Candidate], float]
    extensions: Callable[[Candidate], Iterable[Candidate]] = lambda _: ()
    # What the thresholds are shares of: the workload's time as measured (by default, the statements' weights).
    # Measured time stays the reference after an index made some statements cheaper, so what was negligible
    # before stays negligible on the next run.
    workload_ms: float | None = None
    # Where the reference is itself a cost (no timings), the reference given the statements' costs under a set:
    # a run on the applied advice measures the workload as the advice left it, so the thresholds here are too.
    reference: Callable[[Mapping[int, float]], float] | None = None


@dataclass(frozen=True)
class Served:
    number: int
    before: float  # cost with the existing indexes
    after: float  # cost with the whole chosen set
    saved_ms: float  # what this index adds: the statement's weighted cut when it joins the rest of the set


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    size_bytes: int
    write_overhead_ms: float
    saved_ms: float  # marginal: what the workload loses if this index alone is left out
    served: tuple[Served, ...]


@dataclass
class Selection:
    chosen: list[Choice] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    stop: Stop = Stop.nothing_left
    total_ms: float = 0.0  # the workload's weight
    saved_ms: float = 0.0  # what the whole set saves of it


def _weighted_cut(baseline: Baseline, current: float, after: float) -> float:
    """The statement's weight times the share of its cost an index set cuts; nothing below the noise."""
    if baseline.cost <= 0 or (current - after) < NOISE * current:
        return 0.0
    return baseline.total_time_ms * (current - after) / baseline.cost


class _Search:
    def __init__(self, problem: Problem, budget: Budget) -> None:
        self.p = problem
        self.budget = budget
        self.config: frozenset[Candidate] = frozenset()
        self.current = {number: base.cost for number, base in problem.baselines.items()}
        weights = sum(base.total_time_ms for base in problem.baselines.values())
        self.total = problem.workload_ms if problem.workload_ms is not None else weights
        self.extended: dict[Candidate, Candidate] = {}
        self.alone: dict[Candidate, tuple[float, float, float]] = {}  # a seed's parts against the existing indexes
        # Each step's parts as last costed, with the set they were costed against: the final round costs every
        # step against the final set, which the rejection reasons then read instead of planning again.
        self.costed: dict[Step, tuple[frozenset[Candidate], tuple[float, float, float]]] = {}

    def parts(self, step: Step) -> tuple[float, float, float]:
        """(saving in ms, write overhead in ms, bytes added) of taking `step` from the current set."""
        config = (self.config - {step.old}) | {step.new}
        numbers = set(self.p.statements_of(step.new)) | (set(self.p.statements_of(step.old)) if step.old else set())
        saved = 0.0
        for number in sorted(numbers):
            base = self.p.baselines.get(number)
            if base is None:
                continue
            after = self.p.cost(number, config)
            change = self.current[number] - after
            if abs(change) >= NOISE * self.current[number]:
                saved += base.total_time_ms * change / base.cost if base.cost > 0 else 0.0
        overhead = self.p.write_overhead_ms(step.new) - (self.p.write_overhead_ms(step.old) if step.old else 0.0)
        added = self.p.size(step.new) - (self.p.size(step.old) if step.old else 0)
        self.costed[step] = (self.config, (saved, overhead, float(added)))
        return saved, overhead, float(added)

    def known_parts(self, step: Step) -> tuple[float, float, float]:
        """`parts`, from the last costing when that was against the current set."""
        known = self.costed.get(step)
        if known is not None and known[0] == self.config:
            return known[1]
        return self.parts(step)

    def fits(self, step: Step) -> Stop | None:
        if step.old is None and len(self.config) >= self.budget.max_indexes:
            return Stop.max_indexes
        used = sum(self.p.size(c) for c in self.config)
        if used - (self.p.size(step.old) if step.old else 0) + self.p.size(step.new) > self.budget.max_size:
            return Stop.max_size
        return None

    def take(self, step: Step) -> None:
        if step.old is not None:
            self.extended[step.old] = step.new
        self.config = (self.config - {step.old}) | {step.new}
        numbers = set(self.p.statements_of(step.new)) | (set(self.p.statements_of(step.old)) if step.old else set())
        for number in numbers:
            if number in self.current:
                self.current[number] = self.p.cost(number, self.config)


def _ratio(net: float, added: float) -> float:
    return net / max(added, 8192.0)  # a page at least: a step that adds nothing is not infinitely good


# Rounds of growth and pruning before the set is taken as it stands (each round but the last changes the set).
MAX_ROUNDS = 12


def choose(problem: Problem, budget: Budget) -> Selection:
    """Grow the set, prune it, then cost every step again against the set as it stands, exactly, and grow on
    if one passes: the lazy bounds and the re-costing after each step are shortcuts that can miss a step (one
    dropped while a competitor stood that pruning took out, one that only pays beside an index chosen later),
    and a run on this advice, applied, costs exactly those steps. The set is done when none passes: the fixed
    point, up to the planner costing a built index as it costed the hypothetical one."""
    search = _Search(problem, budget)
    outcome = Selection(total_ms=search.total)
    seeds = list(dict.fromkeys(problem.seeds))
    pruned: list[Rejection] = []
    seen: set[frozenset[Candidate]] = set()
    for _ in range(MAX_ROUNDS):
        seen.add(search.config)
        steps = [Step(seed) for seed in seeds if seed not in search.config]
        steps += [
            Step(extension, index)
            for index in sorted(search.config, key=lambda c: c.describe())
            for extension in problem.extensions(index)
            if extension not in search.config
        ]
        took, outcome.stop = _grow(problem, budget, search, seeds, steps)  # the last round's reason stands
        if took:
            pruned += _prune(problem, search, budget)
            if search.config in seen:
                break  # pruning took out what this round added
            continue
        # Nothing passes any more. Where the reference is a cost, the set lowers it: a run on the applied advice
        # would judge against the lower one, so the thresholds here follow it down until it holds still.
        lower = problem.reference(search.current) if problem.reference is not None else search.total
        if lower >= search.total:
            break
        search.total = lower
    outcome.total_ms = search.total
    outcome.chosen = _explain(problem, search.config)
    chosen = {c.candidate.describe() for c in outcome.chosen}
    pruned = list({r.index: r for r in pruned if r.index not in chosen}.values())
    outcome.rejected = pruned + _rejections(problem, search, budget, {r.index for r in pruned})
    outcome.saved_ms = sum(
        max(0.0, _weighted_cut(base, base.cost, search.current[number])) for number, base in problem.baselines.items()
    )
    return outcome


def _grow(
    problem: Problem, budget: Budget, search: _Search, seeds: list[Candidate], steps: list[Step]
) -> tuple[bool, Stop]:
    """Extend from the current set, lazily, starting from `steps` costed exactly; whether a step was taken, and
    why growing stopped."""
    # The lazy queue holds (-ratio, tie-break, step); a popped step is re-evaluated against the current set and
    # taken only if it is still at least as good as the next one's (older) bound.
    queue: list[tuple[float, str, int, Step]] = []
    counter = 0
    took = False
    stop = Stop.nothing_left

    def push(step: Step) -> None:
        nonlocal counter
        saved, overhead, added = search.parts(step)
        if step.old is None and not search.config:
            search.alone[step.new] = (saved, overhead, added)
        net = saved - overhead
        if net > 0:
            counter += 1
            heapq.heappush(queue, (-_ratio(net, added), step.new.describe(), counter, step))

    for step in steps:
        push(step)
    while queue:
        _, _, _, step = heapq.heappop(queue)
        if (step.old is not None and step.old not in search.config) or step.new in search.config:
            continue  # extends an index since replaced, or already taken
        saved, overhead, added = search.known_parts(step)  # against the current set
        net = saved - overhead
        if net <= 0:
            continue
        ratio = _ratio(net, added)
        if queue and ratio < -queue[0][0]:
            counter += 1
            heapq.heappush(queue, (-ratio, step.new.describe(), counter, step))
            continue
        if added > 0 and net / search.total / (added / MB) < budget.per_mb:
            stop = Stop.per_mb  # every step left saves less per byte
            break
        if net < budget.min_share * search.total:
            stop = Stop.negligible  # a worse ratio may still save more in all: keep looking
            continue
        over = search.fits(step)
        if over is not None:
            stop = over  # a smaller step may still fit
            continue
        search.take(step)
        took = True
        for extension in problem.extensions(step.new):
            push(Step(extension, step.new))
        # An index on another table may now be worth more than its bound says (a join that can now start from
        # this one's rows): the lazy queue assumes savings only shrink, so those sharing statements with this
        # step are costed again. Indexes on the same table only compete with it: their bounds still hold.
        touched = set(problem.statements_of(step.new))
        for seed in seeds:
            if (
                seed.table != step.new.table
                and seed not in search.config
                and touched & set(problem.statements_of(seed))
            ):
                push(Step(seed))
    return took, stop


def _prune(problem: Problem, search: _Search, budget: Budget) -> list[Rejection]:
    """Take out, weakest per byte first, a chosen index the rest of the set has made negligible, in all or per
    MB of its whole size: a step that was worth it when taken may be served later by an extension of another
    index, and an index kept must be worth its size beside the rest, as a new step of that size would be."""
    rejected = []
    while search.config:
        weak = [
            choice
            for choice in _explain(problem, search.config)
            if (net := choice.saved_ms - choice.write_overhead_ms) < budget.min_share * search.total
            or net / search.total / (max(choice.size_bytes, 8192) / MB) < budget.per_mb
        ]
        if not weak:
            break
        weakest = min(
            weak, key=lambda c: (_ratio(c.saved_ms - c.write_overhead_ms, c.size_bytes), c.candidate.describe())
        )
        search.config = search.config - {weakest.candidate}
        for number in problem.statements_of(weakest.candidate):
            if number in search.current:
                search.current[number] = problem.cost(number, search.config)
        reason = "taken, then left out: beside the rest of the chosen set it saves too little for its size"
        rejected.append(Rejection(weakest.candidate.describe(), reason))
    return rejected


def _explain(problem: Problem, config: frozenset[Candidate]) -> list[Choice]:
    """Each chosen index with the statements it serves and its marginal saving (the set without it)."""
    chosen = []
    for candidate in sorted(config, key=lambda c: c.describe()):
        without = config - {candidate}
        served = []
        for number in sorted(set(problem.statements_of(candidate))):
            base = problem.baselines.get(number)
            if base is None:
                continue
            after = problem.cost(number, config)
            lost = problem.cost(number, without)
            cut = _weighted_cut(base, lost, after)
            if cut > 0:
                served.append(Served(number, base.cost, after, cut))
        saved = sum(s.saved_ms for s in served)
        chosen.append(
            Choice(candidate, problem.size(candidate), problem.write_overhead_ms(candidate), saved, tuple(served))
        )
    return sorted(chosen, key=lambda c: -c.saved_ms)


def _rejections(problem: Problem, search: _Search, budget: Budget, pruned: set[str]) -> list[Rejection]:
    """Why each generated candidate is not in the set."""
    rejected = []
    for seed in dict.fromkeys(problem.seeds):
        if seed in search.config or seed.describe() in pruned:
            continue
        reason = _why_not(seed, search, budget)
        rejected.append(Rejection(seed.describe(), reason))
    return rejected


def _why_not(seed: Candidate, search: _Search, budget: Budget) -> str:
    final = seed
    while final in search.extended:
        final = search.extended[final]
    if final in search.config:
        return f"extended into {final.describe()}"
    saved, overhead, added = search.alone.get(seed, (0.0, 0.0, 0.0))
    if saved <= 0:
        return "no statement got cheaper with it (the planner would not use it, or barely)"
    if saved <= overhead:
        return f"write overhead ~{overhead:,.1f} ms outweighs the ~{saved:,.1f} ms it saves"
    saved, overhead, added = search.known_parts(Step(seed))
    net = saved - overhead
    if net <= 0:
        return "its statements are already served by the chosen indexes"
    share = net / search.total if search.total else 0.0
    if added > 0 and share / (added / MB) < budget.per_mb:
        if budget.relative:
            return (
                f"saves {share:.2%} of the workload for {added / MB:,.1f} MB, {added / budget.database_bytes:.2%} "
                f"of the database's size: less than {budget.min_share_per_size:g}x that (min_saving_per_size)"
            )
        return (
            f"saves {share:.2%} of the workload for {added / MB:,.1f} MB: less than "
            f"{budget.min_share_per_mb:.2%} per MB (min_saving_per_mb)"
        )
    if share < budget.min_share:
        return f"saves {share:.2%} of the workload: less than {budget.min_share:.1%} (min_saving)"
    if search.fits(Step(seed)) is Stop.max_indexes:
        return f"over the budget of {budget.max_indexes} indexes (--max-indexes)"
    if search.fits(Step(seed)) is Stop.max_size:
        return f"over the size budget of {budget.max_size:,} bytes (--max-size)"
    return "not chosen"


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
