"""Read a statement with sqlglot and say, per table, which columns it searches by equality, range, join and
sort, which constants it always carries, and where its `$n` parameters sit.

Every column is resolved to its table through the catalog (aliases, unqualified names, search_path,
correlated subqueries). Nothing here raises on bad input: a statement the advisor can't use comes back as
`Skipped` with a reason.
"""

from __future__ import annotations

import itertools
import logging
import re

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.optimizer.scope import Scope, traverse_scope

from pgops.advisor.model import (
    SKIP_MISSING_RELATION,
    SKIP_MULTIPLE,
    SKIP_NO_TABLE,
    SKIP_PRIVILEGE,
    SKIP_SYNTAX,
    SKIP_TOO_LARGE,
    SKIP_UTILITY,
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
from pgops.advisor.normalize import plannable

# A statement's parse work is bounded: sqlglot's time and memory grow with the text (its tree takes many times the
# text's size), and extraction with the syntax nodes. Statements this long are generated (IN lists, multi-row
# VALUES) and rare; PostgreSQL keeps at most track_activity_query_size (1 kB by default, 1 MB at most) of one.
MAX_STATEMENT_CHARS = 100_000
MAX_STATEMENT_NODES = 50_000  # text dense in nodes (`a=1 OR a=2 ...`) reaches this below MAX_STATEMENT_CHARS
_SHOWN_CHARS = 1_000  # of a statement too large to analyze, kept for --explain and the JSON output

_DIALECT = Postgres()
# sqlglot logs how it reads odd syntax ("Applying array index offset", "unsupported syntax"): noise on a pgops
# user's stderr, where a statement the advisor can't use is already reported as Skipped with its reason.
logging.getLogger("sqlglot").setLevel(logging.CRITICAL + 1)
# Leading comments are matched possessively (`*+`): with backtracking, `.*?` could also end a comment at a later
# `*/`, and a run of comments before a non-keyword took time exponential in their number.
_FIRST_WORD = re.compile(r"^\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*+\(*\s*([A-Za-z]+)", re.DOTALL)
_QUERY_WORDS = {"select", "with", "insert", "update", "delete", "values", "table"}
_RANGE_OPS = {exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
_SYSTEM_SCHEMAS = {"pg_catalog", "information_schema"}
_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


class _MissingRelation(Exception):
    pass


def parse(text: str) -> exp.Expression | Skipped:
    """The statement's syntax tree, or why it can't be used."""
    if len(text) > MAX_STATEMENT_CHARS:
        detail = f"{len(text):,} characters, over the limit of {MAX_STATEMENT_CHARS:,}"
        return Skipped(_shortened(text), SKIP_TOO_LARGE, detail)
    stripped = text.strip().rstrip(";").strip()
    if stripped == "<insufficient privilege>":
        return Skipped(text, SKIP_PRIVILEGE)
    match = _FIRST_WORD.match(stripped)
    if not match:
        return Skipped(text, SKIP_SYNTAX, "no statement keyword")
    if match[1].lower() not in _QUERY_WORDS:
        return Skipped(text, SKIP_UTILITY, match[1].upper())
    try:
        trees = [tree for tree in _DIALECT.parse(stripped) if tree is not None]
    except Exception as exc:  # sqlglot raises ParseError, TokenError and, on odd input, others
        return Skipped(text, SKIP_SYNTAX, _first_line(exc))
    if len(trees) != 1:
        return Skipped(text, SKIP_MULTIPLE if trees else SKIP_SYNTAX)
    tree = trees[0]
    if not isinstance(tree, exp.Query | exp.Insert | exp.Update | exp.Delete):
        return Skipped(text, SKIP_UTILITY, type(tree).__name__)
    if sum(1 for _ in itertools.islice(tree.walk(), MAX_STATEMENT_NODES + 1)) > MAX_STATEMENT_NODES:
        return Skipped(_shortened(text), SKIP_TOO_LARGE, f"over the limit of {MAX_STATEMENT_NODES:,} syntax nodes")
    return tree


def _shortened(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def analyze(statement: Statement, catalog: Catalog) -> Analysis | Skipped:
    """Parse and extract in one step; no exception escapes."""
    text = plannable(statement.query) if len(statement.query) <= MAX_STATEMENT_CHARS else statement.query
    tree = parse(text)
    if isinstance(tree, Skipped):
        return _with_weight(tree, statement)
    try:
        result = extract(statement, tree, catalog)
    except _MissingRelation as missing:
        return Skipped(statement.query, SKIP_MISSING_RELATION, str(missing), statement.calls, statement.total_time_ms)
    except RecursionError:
        return Skipped(statement.query, SKIP_SYNTAX, "nested too deeply", statement.calls, statement.total_time_ms)
    except Exception as exc:  # sqlglot's scope builder can trip on constructs it parses but does not model
        return Skipped(statement.query, SKIP_SYNTAX, _first_line(exc), statement.calls, statement.total_time_ms)
    if isinstance(result, Skipped):
        return _with_weight(result, statement)
    result.text = text
    return result


def _with_weight(skipped: Skipped, statement: Statement) -> Skipped:
    return Skipped(skipped.query, skipped.reason, skipped.detail, statement.calls, statement.total_time_ms)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def extract(statement: Statement, tree: exp.Expression, catalog: Catalog) -> Analysis | Skipped:
    """Per-table column uses of a parsed statement."""
    extractor = _Extractor(catalog, {_norm(cte.args["alias"].this) for cte in tree.find_all(exp.CTE) if cte.alias})
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


def _norm(identifier: exp.Expression | str | None) -> str:
    """Postgres folds unquoted identifiers to lower case."""
    if identifier is None:
        return ""
    if isinstance(identifier, exp.Identifier):
        return identifier.this if identifier.quoted else identifier.this.lower()
    return str(identifier).lower()


def _table_parts(table: exp.Table) -> tuple[str, str | None]:
    schema = table.args.get("db")
    return _norm(table.args.get("this")), _norm(schema) if schema is not None else None


class _Extractor:
    def __init__(self, catalog: Catalog, cte_names: set[str]) -> None:
        self.catalog = catalog
        self.cte_names = cte_names
        self.tables: dict[TableKey, TableUse] = {}
        self.params: dict[int, ParamUse] = {}
        self.has_limit = False
        self.columns = _ScopeColumns()
        self._scope_tables: dict[int, dict[str, TableInfo | None]] = {}

    # -- tables ------------------------------------------------------------------------------------------------

    def _info(self, table: exp.Table) -> TableInfo | None:
        if not isinstance(table.args.get("this"), exp.Identifier):
            return None  # a table function such as generate_series()
        name, schema = _table_parts(table)
        if schema is None and name in self.cte_names:
            return None  # a CTE the scope builder did not model (a data-modifying one)
        info = self.catalog.resolve(name, schema)
        if info is None and (schema in _SYSTEM_SCHEMAS or (schema is None and name.startswith("pg_"))):
            return None  # a system catalog: never a candidate, never missing
        if info is None:
            raise _MissingRelation(f"{schema}.{name}" if schema else name)
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
                use.updated.add(_norm(assignment.this.args.get("this")))

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
        name = _norm(column.args.get("this"))
        qualifier = column.args.get("table")
        while scope is not None:
            sources = self._sources(scope)
            if qualifier is not None:
                key = _norm(qualifier)
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
                info = sources.get(_norm(star.args.get("table")))
                if info:
                    self.use(info.key).star = True
        conditions: list[exp.Expression] = []
        where = select.args.get("where")
        if where is not None:
            conditions += _conjuncts(where.this)
        for join in select.args.get("joins") or []:
            if join.args.get("on") is not None:
                conditions += _conjuncts(join.args["on"])
            for using in join.args.get("using") or []:
                name = _norm(using if isinstance(using, exp.Identifier) else using.this)
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
        if not left_col or not _is_value(right):
            return
        use = self.use(left_col[0].key)
        if op == "=":
            use.add(use.equality, left_col[1])
            constant = _literal(right)
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
        number = _param_number(value)
        if number is not None and number not in self.params:
            self.params[number] = ParamUse(column[0].key if column else None, column[1] if column else None, op)

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


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    """The terms of an AND chain, left to right; a loop, not recursion: a long chain is as deep as it is long."""
    found: list[exp.Expression] = []
    stack = [node]
    while stack:
        node = stack.pop()
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.And):
            stack += (node.expression, node.this)
        else:
            found.append(node)
    return found


# The clauses that decide whether a column in them belongs to its scope (as in sqlglot's Scope.columns).
_COLUMN_CLAUSES = (
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


class _ScopeColumns:
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
        while ancestor is not None and not isinstance(ancestor, _COLUMN_CLAUSES):
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


def _is_value(node: exp.Expression) -> bool:
    """A constant, a parameter, or an expression of them (`now() - interval '1 day'`): not a column or subquery."""
    return node.find(exp.Column, exp.Query) is None


def _param_number(node: exp.Expression | None) -> int | None:
    while isinstance(node, exp.Cast | exp.Paren | exp.Any):
        node = node.this
    if isinstance(node, exp.Parameter):
        inner = node.this
        text = inner.this if isinstance(inner, exp.Literal | exp.Identifier) else str(inner)
        if str(text).isdigit():
            return int(text)
    return None


def _literal(node: exp.Expression) -> str | int | float | bool | None:
    if isinstance(node, exp.Cast):
        node = node.this
    negative = isinstance(node, exp.Neg)
    if negative:
        node = node.this
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        try:
            number = float(node.this) if any(ch in node.this for ch in ".eE") else int(node.this)
        except ValueError:
            return None
        return -number if negative else number
    return None


def count_parameters(text: str) -> int:
    """The highest `$n` in a statement, for PREPARE; tolerant of text sqlglot can't read."""
    return max((int(n) for n in re.findall(r"\$(\d+)", text)), default=0)
