"""Reading pg_stat_statements, shared by the index advisor and the workload report: where the extension lives,
which column holds the time, the queries composed around the one list of statements that leaves pgops' own out
(`sql/pg_stat_statements/statements.sql`), and the one-line errors for a missing extension or privilege."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from pgops.errors import PgopsError
from pgops.resources import MARK, read_sql, read_sql_part


@dataclass(frozen=True)
class Extension:
    schema: str
    total_time: str  # total_exec_time on 13+, total_time before
    server_version_num: int


def locate(conn: psycopg.Connection, *, otherwise: str = "") -> Extension:
    """The extension's schema and time column; `otherwise` ends the message when it is not installed."""
    row = conn.execute(
        MARK + "SELECT n.nspname, current_setting('server_version_num')::int FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"
    ).fetchone()
    if row is None:
        also = f", {otherwise}" if otherwise else ""
        raise PgopsError(
            "pg_stat_statements is not installed in this database: run CREATE EXTENSION pg_stat_statements "
            f"(package postgresql-contrib; it must be in shared_preload_libraries){also}"
        )
    schema, version = row
    return Extension(schema, "total_exec_time" if version >= 130000 else "total_time", version)


def query(name: str, extension: Extension) -> sql.Composed:
    """`sql/<name>` with its {statements} (the shared list), {schema} and {total_time} filled in."""
    names = {"schema": sql.Identifier(extension.schema), "total_time": sql.Identifier(extension.total_time)}
    statements = sql.SQL(read_sql_part("pg_stat_statements/statements.sql")).format(**names)
    return sql.SQL(read_sql(name)).format(statements=statements, **names)


@contextmanager
def readable() -> Iterator[None]:
    """Turn the server's refusals to read the view into one line saying what fixes them."""
    try:
        yield
    except pgerrors.ObjectNotInPrerequisiteState as exc:
        raise PgopsError(
            f"pg_stat_statements can't be read ({exc.diag.message_primary}): add it to shared_preload_libraries "
            "and restart PostgreSQL"
        ) from None
    except pgerrors.InsufficientPrivilege as exc:
        raise PgopsError(
            f"can't read pg_stat_statements ({exc.diag.message_primary}): GRANT pg_read_all_stats TO the pgops role"
        ) from None
