"""Cleanup policies: the ready-made ones, one-off ones from the command line, and their validation against the
catalog, so a wrong table, column, type or privilege fails before a single row is deleted."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from datetime import timedelta

import pglast
import psycopg
from psycopg import sql

from pgops import crontab
from pgops.config import CleanupPolicy, Settings, parse_duration
from pgops.errors import PgopsError, first_line

CRON_DATABASE = "@cron"  # `database` value meaning "wherever pg_cron keeps its tables" (cron.database_name)
EXPIRY_TYPES = {"timestamp", "timestamptz", "date"}
MAX_WHERE_LENGTH = 10_000  # a predicate, not a program: bounds the lexer's and the planner's work

# Tables of the systems pgops serves. `if_exists`: where the table is missing the policy is skipped, not an error,
# so all of them can be on by default; `[cleanup] ready_made = [...]` chooses which, a configured policy of
# the same name replaces one.
READY_MADE: dict[str, CleanupPolicy] = {
    "idempotency_keys": CleanupPolicy(table="public.idempotency_keys", expired_column="expires_at", if_exists=True),
    "sessions": CleanupPolicy(table="public.sessions", expired_column="expires_at", if_exists=True),
    "request_logs": CleanupPolicy(
        table="public.request_logs",
        older_than_column="created_at",
        older_than=timedelta(days=30),
        schedule="*/15 * * * *",
        if_exists=True,
    ),
    # pg_cron logs every run here and never trims it.
    "cron_job_run_details": CleanupPolicy(
        table="cron.job_run_details",
        older_than_column="end_time",
        older_than=timedelta(days=7),
        schedule="7 * * * *",
        database=CRON_DATABASE,
        if_exists=True,
    ),
}


def check_shape(name: str, policy: CleanupPolicy) -> None:
    """Errors a policy has on its own, before any catalog is read."""
    where = f"cleanup policy {name}"
    if bool(policy.expired_column) == bool(policy.older_than_column):
        raise PgopsError(f"{where}: set exactly one of expired_column or older_than_column (with older_than)")
    if policy.older_than_column and policy.older_than is None:
        raise PgopsError(f'{where}: older_than_column needs older_than, e.g. older_than = "30d"')
    if policy.older_than is not None and not policy.older_than_column:
        raise PgopsError(f"{where}: older_than needs older_than_column")
    if policy.batch_size < 1:
        raise PgopsError(f"{where}: batch_size must be at least 1")
    if policy.max_rows is not None and policy.max_rows < 1:
        raise PgopsError(f"{where}: max_rows must be at least 1")
    if policy.target_batch_duration <= timedelta(0) or policy.max_runtime <= timedelta(0):
        raise PgopsError(f"{where}: target_batch_duration and max_runtime must be positive")
    try:  # the daemon schedules the policy with it: a typo should fail here, not when the daemon starts
        crontab.trigger(policy.schedule)
    except ValueError as exc:
        raise PgopsError(f"{where}: schedule {policy.schedule!r} is not a crontab expression: {exc}") from None
    split_table(policy.table)
    if policy.where:
        check_where(where, policy.where)


# PostgreSQL's lexer (through pglast) names single-character tokens by their code.
_OPENING = {"ASCII_40", "ASCII_91"}  # ( [
_CLOSING = {"ASCII_41", "ASCII_93"}  # ) ]
_SEMICOLON = "ASCII_59"
_COMMENTS = {"SQL_COMMENT", "C_COMMENT"}


def check_where(where: str, text: str) -> None:
    """Refuse a `where` that is not one expression inside its parentheses, before anything runs.

    The predicate is read by PostgreSQL's own lexer (strings, dollar quotes, nested comments, `U&` and `E`
    strings as the server reads them with standard_conforming_strings on, which pgops' sessions set): every
    parenthesis or bracket it closes must be one it opened, it ends with none open, and holds no `;`. Then it
    must parse as the single expression of `SELECT (...)`. So `true) OR (1=1` can't widen what is deleted."""
    label = f"{where}: where {text!r}"  # repr: one line, control characters escaped
    if len(text) > MAX_WHERE_LENGTH:
        raise PgopsError(f"{where}: where is {len(text):,} characters; at most {MAX_WHERE_LENGTH:,} are accepted")
    try:
        tokens = pglast.parser.scan(text)
    except pglast.parser.ParseError as exc:
        raise PgopsError(f"{label} does not read as SQL: {exc}") from None
    depth = 0
    for token in tokens:
        if token.name in _OPENING:
            depth += 1
        elif token.name in _CLOSING:
            depth -= 1
            if depth < 0:
                raise PgopsError(f"{label} closes a parenthesis it did not open (at character {token.start + 1})")
        elif token.name == _SEMICOLON:
            raise PgopsError(f"{label} holds a ';': it must be one expression")
        elif token.name == "PARAM":
            raise PgopsError(f"{label} holds a parameter ({text[token.start : token.end + 1]}): write the value")
        elif token.name == "SCONST" and text[token.start] == "'" and "\\" in text[token.start : token.end + 1]:
            # With standard_conforming_strings off (a statement may turn it off), `\'` ends no string: the same
            # text would read differently. E'...' and dollar quotes read alike either way.
            raise PgopsError(
                f"{label} has a backslash in a '...' string, which reads differently when standard_conforming_strings"
                " is off: write it as E'...' or $$...$$"
            )
    if depth:
        raise PgopsError(f"{label} leaves {depth} parenthesis open")
    if all(token.name in _COMMENTS for token in tokens):
        raise PgopsError(f"{label} is empty")
    try:
        statements = pglast.parser.parse_sql(f"SELECT (\n{text}\n)")
    except pglast.parser.ParseError as exc:
        raise PgopsError(f"{label} is not an expression: {exc}") from None
    select = statements[0].stmt if len(statements) == 1 else None
    if not isinstance(select, pglast.ast.SelectStmt) or len(select.targetList or ()) != 1 or select.fromClause:
        raise PgopsError(f"{label} is not one expression")


def resolve_policies(settings: Settings) -> dict[str, CleanupPolicy]:
    """The enabled ready-made policies, then the configured ones (a configured name replaces a ready-made one)."""
    unknown = sorted(set(settings.cleanup.ready_made) - set(READY_MADE))
    if unknown:
        raise PgopsError(f"cleanup.ready_made: no ready-made policy {unknown[0]} (known: {', '.join(READY_MADE)})")
    policies = {name: READY_MADE[name] for name in settings.cleanup.ready_made}
    policies.update(settings.cleanup.policies)
    for name, policy in policies.items():
        check_shape(name, policy)
    return policies


def one_off_policy(
    table: str,
    *,
    expired_column: str | None = None,
    older_than: str | None = None,
    where: str | None = None,
) -> CleanupPolicy:
    """A policy from `--table T --expired-column C` or `--table T --older-than C=INTERVAL`."""
    if bool(expired_column) == bool(older_than):
        raise PgopsError("--table needs exactly one of --expired-column COLUMN or --older-than COLUMN=INTERVAL")
    column, interval = None, None
    if older_than:
        column, _, text = older_than.partition("=")
        try:
            interval = parse_duration(text)
        except ValueError as exc:
            raise PgopsError(f"--older-than {older_than}: {exc} (e.g. created_at=30d)") from None
        if not column.strip():
            raise PgopsError(f"--older-than {older_than}: expected COLUMN=INTERVAL, e.g. created_at=30d")
    policy = CleanupPolicy(
        table=table, expired_column=expired_column, older_than_column=column, older_than=interval, where=where
    )
    check_shape("(command line)", policy)
    return policy


def split_table(name: str) -> tuple[str | None, str]:
    """`schema.table` or `table` (found on the search_path); quoted names with dots are not supported."""
    parts = name.split(".")
    if len(parts) > 2 or not all(parts):
        raise PgopsError(f"table {name!r}: expected SCHEMA.TABLE or TABLE")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def condition_column(policy: CleanupPolicy) -> str:
    column = policy.expired_column or policy.older_than_column
    assert column is not None  # check_shape guarantees one
    return column


def condition(policy: CleanupPolicy, *, with_parameters: bool = False) -> sql.Composable:
    """The rows that go, evaluated by the server at the moment of each batch (`now()` is the batch's start).

    `with_parameters`: the statement is executed with parameters, so psycopg reads `%` in it as the start of
    a placeholder, and a `%` of the operator's predicate is doubled; a statement executed without
    parameters goes to the server as written, `%` and all. The closing parenthesis goes on a line of its own, so
    that a `--` comment ending the operator's predicate cannot swallow it."""
    column = sql.Identifier(condition_column(policy))
    if policy.expired_column:
        expired = sql.SQL("{} < now()").format(column)
    else:
        expired = sql.SQL("{} < now() - {}::interval").format(column, sql.Literal(policy.older_than))
    if not policy.where:
        return expired
    where = policy.where.replace("%", "%%") if with_parameters else policy.where  # the operator's own predicate
    return sql.SQL("{} AND ({}\n)").format(expired, sql.SQL(where))


def describe_condition(policy: CleanupPolicy) -> str:
    return condition(policy).as_string(None)


# -- catalog ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    parent: Relation | None = None  # the partitioned table a leaf partition is attached to

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True)
class LeafInfo:
    """A relation that holds rows: the table itself, or one leaf partition of a partitioned table."""

    relation: Relation
    indexed: bool  # a valid btree index leads with the condition column
    missing_privileges: tuple[str, ...]
    estimated_rows: float


@dataclass(frozen=True)
class TableInfo:
    relation: Relation
    partitioned: bool
    columns: dict[str, str]  # name → type name (pg_type.typname)
    leaves: tuple[LeafInfo, ...]
    role: str


def read_table(conn: psycopg.Connection, table: str, column: str) -> TableInfo | None:
    """The table's columns, leaf partitions, supporting indexes and the current role's privileges, or None."""
    schema, name = split_table(table)
    row = conn.execute(
        """
        SELECT c.oid, n.nspname, c.relname, c.relkind = 'p', current_user
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = %(name)s AND c.relkind IN ('r', 'p')
          AND CASE WHEN %(schema)s::text IS NULL THEN pg_table_is_visible(c.oid) ELSE n.nspname = %(schema)s END
        """,
        {"schema": schema, "name": name},
    ).fetchone()
    if row is None:
        return None
    oid, schema, name, partitioned, role = row
    relation = Relation(oid, schema, name)
    columns = dict(
        conn.execute(
            """
            SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """,
            (oid,),
        ).fetchall()
    )
    leaves = conn.execute(
        """
        SELECT c.oid, n.nspname, c.relname, p.oid, pn.nspname, p.relname,
               EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                       JOIN pg_am am ON am.oid = ic.relam JOIN pg_attribute a
                         ON a.attrelid = c.oid AND a.attnum = i.indkey[0] AND a.attname = %(column)s
                       WHERE i.indrelid = c.oid AND i.indisvalid AND am.amname = 'btree'),
               array_remove(ARRAY[
                 CASE WHEN NOT has_table_privilege(c.oid, 'SELECT') THEN 'SELECT' END,
                 CASE WHEN NOT has_table_privilege(c.oid, 'DELETE') THEN 'DELETE' END,
                 CASE WHEN NOT has_any_column_privilege(c.oid, 'UPDATE') THEN 'UPDATE' END], NULL),
               greatest(c.reltuples, 0)
        FROM (SELECT relid, parentrelid FROM pg_partition_tree(%(oid)s) WHERE isleaf
              UNION ALL  -- a plain table is not a partition tree: it is its own only leaf
              SELECT %(oid)s::regclass, NULL WHERE NOT EXISTS (SELECT FROM pg_partition_tree(%(oid)s))) t
        JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_class p ON p.oid = t.parentrelid LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE c.relkind = 'r'
        ORDER BY c.relname
        """,
        {"oid": oid, "column": column},
    ).fetchall()
    return TableInfo(
        relation=relation,
        partitioned=partitioned,
        columns=columns,
        leaves=tuple(
            LeafInfo(
                relation=Relation(r[0], r[1], r[2], Relation(r[3], r[4], r[5]) if r[3] else None),
                indexed=r[6],
                missing_privileges=tuple(r[7]),
                estimated_rows=r[8],
            )
            for r in leaves
        ),
        role=role,
    )


def read_table_names(conn: psycopg.Connection, schema: str | None) -> list[str]:
    """Tables the role can see in `schema` (or on its search_path), to say what exists."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND CASE WHEN %(schema)s::text IS NULL THEN pg_table_is_visible(c.oid) ELSE n.nspname = %(schema)s END
        ORDER BY 1
        """,
        {"schema": schema},
    ).fetchall()
    return [r[0] for r in rows]


# -- decisions ---------------------------------------------------------------------------------------------------


def _listing(names: list[str], wanted: str, what: str) -> str:
    """`did you mean x? <what>: a, b, c`; names compare without their schema."""
    short = {name.rsplit(".", 1)[-1]: name for name in names}
    close = [short[n] for n in difflib.get_close_matches(wanted, list(short), n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    shown = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    return f"{hint}{what}: {shown or 'none'}"


def missing_table_message(name: str, policy: CleanupPolicy, existing: list[str]) -> str:
    schema, table = split_table(policy.table)
    where = f"schema {schema}" if schema else "the search_path"
    return f"cleanup policy {name}: table {policy.table} does not exist; " + _listing(
        existing, table, f"tables in {where}"
    )


def check_table(name: str, policy: CleanupPolicy, info: TableInfo) -> list[str]:
    """Raise for what makes the policy unusable (column, type, privilege); return warnings (missing indexes)."""
    column = condition_column(policy)
    table = info.relation.qualified
    if column not in info.columns:
        raise PgopsError(
            f"cleanup policy {name}: column {column} does not exist in {table}; "
            + _listing(list(info.columns), column, "columns")
        )
    if info.columns[column] not in EXPIRY_TYPES:
        raise PgopsError(
            f"cleanup policy {name}: column {table}.{column} is {info.columns[column]}; "
            "an expiry or age column must be timestamptz, timestamp or date"
        )
    if not info.leaves:
        raise PgopsError(f"cleanup policy {name}: partitioned table {table} has no partitions")
    for leaf in info.leaves:
        if leaf.missing_privileges:
            missing = ", ".join(leaf.missing_privileges)
            raise PgopsError(
                f"cleanup policy {name}: role {info.role} lacks {missing} on {leaf.relation.qualified} "
                f"(a batch is SELECT ... FOR UPDATE SKIP LOCKED, then DELETE); fix: "
                f"GRANT SELECT, DELETE, UPDATE ({column}) ON {leaf.relation.qualified} TO {info.role}"
            )
    return [
        f"no index on {leaf.relation.qualified} ({column}): every run reads the whole table; "
        f"fix: {create_index_statement(leaf.relation, column)}"
        for leaf in info.leaves
        if not leaf.indexed
    ]


def create_index_statement(relation: Relation, column: str) -> str:
    return (
        sql.SQL("CREATE INDEX CONCURRENTLY ON {} ({});").format(relation.ident, sql.Identifier(column)).as_string(None)
    )


@dataclass(frozen=True)
class Checked:
    """A policy that passed validation, with what the run needs to know about its table."""

    name: str
    policy: CleanupPolicy
    table: TableInfo
    warnings: tuple[str, ...]


def inspect(conn: psycopg.Connection, name: str, policy: CleanupPolicy) -> Checked | None:
    """Validate `policy` against the catalog of `conn`'s database; None when the table is missing and the
    policy says `if_exists`."""
    check_shape(name, policy)
    info = read_table(conn, policy.table, condition_column(policy))
    if info is None:
        if policy.if_exists:
            return None
        schema, _ = split_table(policy.table)
        raise PgopsError(missing_table_message(name, policy, read_table_names(conn, schema)))
    warnings = check_table(name, policy, info)
    try:  # the condition (with the operator's own `where`) must compile before anything runs, as one statement
        conn.execute(
            sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(info.relation.ident, condition(policy)),
            prepare=True,  # a prepared statement is one command: a `where` holding `; ...` fails here
        )
    except psycopg.Error as exc:
        reason = first_line(exc)
        raise PgopsError(f"cleanup policy {name}: condition {describe_condition(policy)!r} fails: {reason}") from None
    return Checked(name, policy, info, tuple(warnings))


def policy_summary(policy: CleanupPolicy) -> dict[str, object]:
    """A policy as plain values, for `cleanup list`."""
    values = dataclasses.asdict(policy)
    values["condition"] = describe_condition(policy)
    return json.loads(json.dumps(values, default=lambda v: v.total_seconds() if isinstance(v, timedelta) else str(v)))
