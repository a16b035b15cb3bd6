"""Say, per table, which columns a parsed statement searches by equality, range, join and sort, which constants
it always carries, and where its `$n` parameters sit.

Every column is resolved to its table through the catalog (aliases, unqualified names, search_path,
correlated subqueries); a relation the catalog does not have raises `MissingRelation`.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from pgops.advisor.model import (
    SKIP_NO_TABLE,
    Analysis,
    Catalog,
    Constant,
    ParamUse,
    Skipped,
    Statement,
    TableInfo,
    TableKey,
    TableUse,
)
from pgops.advisor.scope_columns import ScopeColumns
from pgops.advisor.syntax import conjuncts, is_value, literal, norm, param_number, table_parts

_RANGE_OPS = {exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
_SYSTEM_SCHEMAS = {"pg_catalog", "information_schema"}
_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


class MissingRelation(Exception):
    pass


def extract(statement: Statement, tree: exp.Expression, catalog: Catalog) -> Analysis | Skipped:
    """Per-table column uses of a parsed statement."""
    extractor = _Extractor(catalog, {norm(cte.args["alias"].this) for cte in tree.find_all(exp.CTE) if cte.alias})
    kind = "select"
    query: exp.Expression | None = tree
    if isinstance(tree, exp.Insert):
        kind = "insert"
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        extractor.touch(target)
        query = tree.expression if isinstance(tree.expression, exp.Query) else None
    elif isinstance(tree, exp.Update | exp.Delete):
        kind = "update" if isinstance(tree, exp.Update) else "delete"
        query = _as_select(tree)
        if isinstance(tree, exp.Update):
            extractor.note_updates(tree)
    if query is not None:
        for scope in traverse_scope(query):
            extractor.scope(scope)
    if not extractor.tables:
        return Skipped(statement.query, SKIP_NO_TABLE)
    extractor.arithmetic(tree)
    return Analysis(statement, kind, extractor.tables, extractor.params, extractor.has_limit)


def _as_select(tree: exp.Update | exp.Delete) -> exp.Select:
    """`UPDATE t ... FROM u WHERE ...` and `DELETE FROM t USING u WHERE ...` search like a SELECT does."""
    select = exp.Select(expressions=[exp.Star()]).from_(tree.this.copy())
    extra = tree.args.get("from_") or tree.args.get("from")
    sources = [extra.this] if extra is not None else []
    sources += list(tree.args.get("using") or [])
    for source in sources:
        select = select.join(source.copy())
    where = tree.args.get("where")
    if where is not None:
        select.set("where", where.copy())
    return select


class _Extractor:
    def __init__(self, catalog: Catalog, cte_names: set[str]) -> None:
        self.catalog = catalog
        self.cte_names = cte_names
        self.tables: dict[TableKey, TableUse] = {}
        self.params: dict[int, ParamUse] = {}
        self.has_limit = False
        self.columns = ScopeColumns()
        self._scope_tables: dict[int, dict[str, TableInfo | None]] = {}

    # -- tables ------------------------------------------------------------------------------------------------

    def _info(self, table: exp.Table) -> TableInfo | None:
        if not isinstance(table.args.get("this"), exp.Identifier):
            return None  # a table function such as generate_series()
        name, schema = table_parts(table)
        if schema is None and name in self.cte_names:
            return None  # a CTE the scope builder did not model (a data-modifying one)
        info = self.catalog.resolve(name, schema)
        if info is None and (schema in _SYSTEM_SCHEMAS or (schema is None and name.startswith("pg_"))):
            return None  # a system catalog: never a candidate, never missing
        if info is None:
            raise MissingRelation(f"{schema}.{name}" if schema else name)
        return info

    def touch(self, table: exp.Expression) -> TableUse | None:
        if not isinstance(table, exp.Table):
            return None
        info = self._info(table)
        return self.use(info.key) if info else None

    def use(self, key: TableKey) -> TableUse:
        if key not in self.tables:
            self.tables[key] = TableUse(key)
        return self.tables[key]

    def note_updates(self, tree: exp.Update) -> None:
        use = self.touch(tree.this)
        if use is None:
            return
        for assignment in tree.expressions:
            if isinstance(assignment, exp.EQ) and isinstance(assignment.this, exp.Column):
                use.updated.add(norm(assignment.this.args.get("this")))

    def _sources(self, scope: Scope) -> dict[str, TableInfo | None]:
        """alias → table for this scope; None for CTEs and derived tables."""
        cached = self._scope_tables.get(id(scope))
        if cached is not None:
            return cached
        sources: dict[str, TableInfo | None] = {}
        for alias, source in scope.sources.items():
            info = self._info(source) if isinstance(source, exp.Table) else None
            sources[alias] = info
            sources.setdefault(alias.lower(), info)
            if info:
                self.use(info.key)
        self._scope_tables[id(scope)] = sources
        return sources

    def resolve(self, column: exp.Column, scope: Scope | None) -> tuple[TableInfo, str] | None:
        """The table a column belongs to: through its qualifier, or the one table in scope that has it."""
        name = norm(column.args.get("this"))
        qualifier = column.args.get("table")
        while scope is not None:
            sources = self._sources(scope)
            if qualifier is not None:
                key = norm(qualifier)
                if key in sources:
                    info = sources[key]
                    return (info, name) if info and name in info.columns else None
            else:
                owners = [info for info in sources.values() if info and name in info.columns]
                derived = any(info is None for info in sources.values())
                if len(owners) == 1 and not derived:
                    return owners[0], name
                if owners or derived:
                    return None  # ambiguous, or an output column of a CTE or subquery
            scope = scope.parent
        return None

    # -- predicates --------------------------------------------------------------------------------------------

    def scope(self, scope: Scope) -> None:
        sources = self._sources(scope)
        select = scope.expression
        if not isinstance(select, exp.Select):
            return
        for column in self.columns.of(scope):
            found = self.resolve(column, scope)
            if found:
                self.use(found[0].key).referenced.add(found[1])
        for star in select.expressions:
            if isinstance(star, exp.Star):
                for info in sources.values():
                    if info:
                        self.use(info.key).star = True
            elif isinstance(star, exp.Column) and isinstance(star.this, exp.Star):
                info = sources.get(norm(star.args.get("table")))
                if info:
                    self.use(info.key).star = True
        conditions: list[exp.Expression] = []
        where = select.args.get("where")
        if where is not None:
            conditions += conjuncts(where.this)
        for join in select.args.get("joins") or []:
            if join.args.get("on") is not None:
                conditions += conjuncts(join.args["on"])
            for using in join.args.get("using") or []:
                name = norm(using if isinstance(using, exp.Identifier) else using.this)
                for info in sources.values():
                    if info and name in info.columns:
                        self.use(info.key).add(self.use(info.key).join, name)
        for condition in conditions:
            self.predicate(condition, scope)
        self.ordering(select, scope)

    def predicate(self, node: exp.Expression, scope: Scope) -> None:
        if isinstance(node, exp.Paren):
            self.predicate(node.this, scope)
        elif isinstance(node, exp.EQ):
            self.comparison(node.this, node.expression, "=", scope)
        elif isinstance(node, tuple(_RANGE_OPS)):
            self.comparison(node.this, node.expression, _RANGE_OPS[type(node)], scope)
        elif isinstance(node, exp.Between):
            found = self._column(node.this, scope)
            if found:
                self.use(found[0].key).add(self.use(found[0].key).range, found[1])
                self.param(node.args.get("low"), found, "between_low")
                self.param(node.args.get("high"), found, "between_high")
        elif isinstance(node, exp.In):
            found = self._column(node.this, scope)
            if found:
                use = self.use(found[0].key)
                use.add(use.join if node.args.get("query") is not None else use.equality, found[1])
                for value in node.expressions:
                    self.param(value, found, "in")
        elif isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            found = self._column(node.this, scope)
            if found:
                use = self.use(found[0].key)
                op = "IS NOT NULL" if node.args.get("negate") else "IS NULL"
                if op == "IS NULL":
                    use.add(use.equality, found[1])
                use.constants.append(Constant(found[1], op))
        elif isinstance(node, exp.Not) and isinstance(node.this, exp.Is) and isinstance(node.this.expression, exp.Null):
            found = self._column(node.this.this, scope)
            if found:
                self.use(found[0].key).constants.append(Constant(found[1], "IS NOT NULL"))
        elif isinstance(node, exp.Like):
            found = self._column(node.this, scope)
            pattern = node.expression
            if (
                found
                and isinstance(pattern, exp.Literal)
                and pattern.is_string
                and not pattern.this.startswith(("%", "_"))
            ):
                self.use(found[0].key).add(self.use(found[0].key).like, found[1])
            elif found:
                self.param(pattern, found, "like")
        elif isinstance(node, exp.Column):  # WHERE active
            found = self._column(node, scope)
            if found and found[0].columns[found[1]].type == "boolean":
                use = self.use(found[0].key)
                use.add(use.equality, found[1])
                use.constants.append(Constant(found[1], "=", True))

    def comparison(self, left: exp.Expression, right: exp.Expression, op: str, scope: Scope) -> None:
        left_col, right_col = self._column(left, scope), self._column(right, scope)
        if left_col and right_col:
            if op == "=" and left_col[0].key != right_col[0].key:
                for info, name in (left_col, right_col):
                    self.use(info.key).add(self.use(info.key).join, name)
            return
        if not left_col and right_col:
            left, right, left_col = right, left, right_col
            op = _FLIPPED.get(op, op)
        if not left_col or not is_value(right):
            return
        use = self.use(left_col[0].key)
        if op == "=":
            use.add(use.equality, left_col[1])
            constant = literal(right)
            if constant is not None or isinstance(right, exp.Null):
                use.constants.append(Constant(left_col[1], "=", constant))
            self.param(right, left_col, "any" if isinstance(right, exp.Any) else "=")
            array = right.this.unnest() if isinstance(right, exp.Any) else None
            if isinstance(array, exp.Array):  # = ANY(ARRAY[$1, $2])
                for element in array.expressions:
                    self.param(element, left_col, "=")
        else:
            use.add(use.range, left_col[1])
            self.param(right, left_col, op)

    def _column(self, node: exp.Expression | None, scope: Scope) -> tuple[TableInfo, str] | None:
        """The column a predicate side names; a cast of the column's own value still searches it."""
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Column) and isinstance(node.args.get("this"), exp.Identifier):
            return self.resolve(node, scope)
        return None

    def param(self, value: exp.Expression | None, column: tuple[TableInfo, str] | None, op: str) -> None:
        """Note a parameter that is the compared value itself (`= $1`, `= $1::int`, `= ANY($1)`), not one
        buried in an expression (`now() - interval $1`) whose value is not the column's."""
        number = param_number(value)
        if number is not None and number not in self.params:
            self.params[number] = ParamUse(column[0].key if column else None, column[1] if column else None, op)

    def arithmetic(self, tree: exp.Expression) -> None:
        """Note the parameters of constant arithmetic, `$8 + $9` (pg_stat_statements' `1176 + 11`): nothing
        types them, and PostgreSQL can't choose an operator for `unknown + unknown`."""
        for node in tree.find_all(exp.Add, exp.Sub, exp.Mul, exp.Div):
            # a cast types its parameter already (`$2::date + $3::interval`)
            sides = tuple(None if isinstance(side, exp.Cast) else param_number(side) for side in node.unnest_operands())
            if len(sides) != 2 or None in sides:
                continue
            for number in sides:
                self.params.setdefault(number, ParamUse(None, None, "arithmetic"))

    def ordering(self, select: exp.Select, scope: Scope) -> None:
        for clause, op in (("limit", "limit"), ("offset", "offset")):
            node = select.args.get(clause)
            if node is not None:
                self.has_limit = self.has_limit or clause == "limit"
                self.param(node.expression if isinstance(node, exp.Limit | exp.Offset) else node, None, op)
        order = select.args.get("order")
        if order is not None:
            columns = [self._column(o.this, scope) for o in order.expressions if isinstance(o, exp.Ordered)]
            if columns and all(columns) and len({c[0].key for c in columns if c}) == 1:
                for info, name in (c for c in columns if c):
                    self.use(info.key).add(self.use(info.key).sort, name)
        group = select.args.get("group")
        if group is not None:
            for expression in group.expressions:
                found = self._column(expression, scope)
                if found:
                    self.use(found[0].key).add(self.use(found[0].key).group, found[1])
