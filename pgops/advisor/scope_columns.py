"""sqlglot's `Scope.columns`, in linear time (see `ScopeColumns`)."""

from __future__ import annotations

import itertools

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

# The clauses that decide whether a column in them belongs to its scope (as in sqlglot's Scope.columns).
COLUMN_CLAUSES = (
    exp.Select,
    exp.Qualify,
    exp.Order,
    exp.Cluster,
    exp.Having,
    exp.Hint,
    exp.Table,
    exp.Star,
    exp.Distinct,
)


class ScopeColumns:
    """sqlglot's `Scope.columns`, in linear time.

    sqlglot finds each column's clause by walking up its parents, and in `a = 1 OR a = 2 OR ...` that walk is as
    long as the chain: quadratic. Here each node's clause is remembered, so every parent is walked once. The
    selection is sqlglot's own: the scope's columns, those of correlated subqueries naming no local source, but
    not an ORDER BY or DISTINCT column that names an output column.
    """

    def __init__(self) -> None:
        self._clause: dict[int, exp.Expression | None] = {}  # id(node) → nearest clause above it
        self._columns: dict[int, list[exp.Column]] = {}

    def clause(self, node: exp.Expression) -> exp.Expression | None:
        path: list[int] = []
        ancestor = node.parent
        while ancestor is not None and not isinstance(ancestor, COLUMN_CLAUSES):
            if id(ancestor) in self._clause:
                found = self._clause[id(ancestor)]
                break
            path.append(id(ancestor))
            ancestor = ancestor.parent
        else:
            found = ancestor
        for key in path:
            self._clause[key] = found
        return found

    def of(self, scope: Scope) -> list[exp.Column]:
        cached = self._columns.get(id(scope))
        if cached is not None:
            return cached
        expression = scope.expression
        named_selects = set(expression.named_selects) if isinstance(expression, exp.Query) else set()
        own = [
            node
            for node in scope.walk()
            if node is not expression and type(node) is exp.Column and not isinstance(node.this, exp.Star)
        ]
        correlated = itertools.chain(
            scope.subquery_scopes,
            scope.udtf_scopes,
            (child for child in scope.derived_table_scopes if child.can_be_correlated),
        )
        external = [column for child in correlated for column in self.external(child)]
        columns = []
        for column in own + external:
            ancestor = self.clause(column)
            if (
                not ancestor
                or column.text("table")
                or isinstance(ancestor, exp.Select)
                or (isinstance(ancestor, exp.Table) and not isinstance(ancestor.this, exp.Func))
                or (
                    isinstance(ancestor, exp.Order | exp.Cluster | exp.Distinct)
                    and (
                        isinstance(ancestor.parent, exp.Window | exp.WithinGroup)
                        or not isinstance(ancestor.parent, exp.Select)
                        or column.name not in named_selects
                    )
                )
                or (isinstance(ancestor, exp.Star) and column.arg_key != "except_")
            ):
                columns.append(column)
        self._columns[id(scope)] = columns
        return columns

    def external(self, scope: Scope) -> list[exp.Column]:
        """A child scope's columns that name no source of its own: they may belong to an outer scope."""
        if isinstance(scope.expression, exp.SetOperation):
            left, right = scope.set_operation_scopes
            return self.external(left) + self.external(right)
        local = {name for name, _ in scope.references} | scope.semi_or_anti_join_tables
        return [column for column in self.of(scope) if column.text("table") not in local]
