"""What-if costs: a statement's plan cost under a set of hypothetical indexes, asked of the planner through
hypopg (or, without it, estimated by the pg_stats rules), and cached by the indexes that can matter to the
statement (those on its tables), so the selection may ask as often as it likes."""

from __future__ import annotations

from pgops.advisor import rules
from pgops.advisor.hypo import PlanError, Planner
from pgops.advisor.model import Analysis, Candidate, Catalog, TableUse


class WhatIf:
    def __init__(self, planner: Planner, catalog: Catalog, analyses: list[Analysis], baseline: dict[int, float]):
        self.planner = planner
        self.catalog = catalog
        self.analyses = analyses
        self.baseline = baseline
        self._cache: dict[tuple[int, frozenset[Candidate]], float] = {}
        self.planned = 0  # planner calls made, for the summary and the tests
        self.failures: dict[int, str] = {}  # statements a what-if plan failed for: the first reason

    def relevant(self, number: int, config: frozenset[Candidate]) -> frozenset[Candidate]:
        """The indexes of `config` the statement's plan could use: on its tables, with a key column it mentions
        (a B-tree none of whose keys the statement names serves no scan, join, order or skip scan of it)."""
        tables = self.analyses[number].tables
        return frozenset(c for c in config if c.table in tables and _may_use(tables[c.table], c))

    def cost(self, number: int, config: frozenset[Candidate]) -> float:
        indexes = self.relevant(number, config)
        if not indexes:
            return self.baseline[number]
        key = (number, indexes)
        if key not in self._cache:
            self._cache[key] = self._plan(number, indexes)
        return self._cache[key]

    def _plan(self, number: int, indexes: frozenset[Candidate]) -> float:
        analysis = self.analyses[number]
        if self.planner.hypopg is None:
            estimates = [rules.estimate(analysis, candidate, self.catalog) for candidate in indexes]
            return min([self.baseline[number], *estimates])
        self.planned += 1
        try:
            self.planner.configure(indexes)
            costs = self.planner.costs(analysis, generic_plan=False)
        except PlanError as exc:  # no saving can be shown: the statement counts as no index helping it
            self.failures.setdefault(number, str(exc))
            return self.baseline[number]
        return min(costs.cost, self.baseline[number])  # an index the plan would not use costs nothing


def _may_use(use: TableUse, candidate: Candidate) -> bool:
    if use.star or not use.referenced:
        return True  # which columns it reads is not known: any index may matter
    keys = (*candidate.columns, *(constant.column for constant in candidate.predicate))
    return any(column in use.referenced for column in keys)
