"""TPC-DS for the benchmarks, made offline: data and the 99 queries from DuckDB's tpcds extension, loaded into
PostgreSQL with the primary keys the TPC-DS specification defines and nothing else.

Needs the `bench` extra (`pip install -e '.[bench]'`): duckdb and duckdb-extension-tpcds of the same version.
The extension ships as a file inside that package, unsigned, so DuckDB loads it with allow_unsigned_extensions.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

# TPC-DS specification, section 2: each table's primary key (dbgen_version has none and is not loaded).
PRIMARY_KEYS = {
    "call_center": ("cc_call_center_sk",),
    "catalog_page": ("cp_catalog_page_sk",),
    "catalog_returns": ("cr_item_sk", "cr_order_number"),
    "catalog_sales": ("cs_item_sk", "cs_order_number"),
    "customer": ("c_customer_sk",),
    "customer_address": ("ca_address_sk",),
    "customer_demographics": ("cd_demo_sk",),
    "date_dim": ("d_date_sk",),
    "household_demographics": ("hd_demo_sk",),
    "income_band": ("ib_income_band_sk",),
    "inventory": ("inv_date_sk", "inv_item_sk", "inv_warehouse_sk"),
    "item": ("i_item_sk",),
    "promotion": ("p_promo_sk",),
    "reason": ("r_reason_sk",),
    "ship_mode": ("sm_ship_mode_sk",),
    "store": ("s_store_sk",),
    "store_returns": ("sr_item_sk", "sr_ticket_number"),
    "store_sales": ("ss_item_sk", "ss_ticket_number"),
    "time_dim": ("t_time_sk",),
    "warehouse": ("w_warehouse_sk",),
    "web_page": ("wp_web_page_sk",),
    "web_returns": ("wr_item_sk", "wr_order_number"),
    "web_sales": ("ws_item_sk", "ws_order_number"),
    "web_site": ("web_site_sk",),
}

_TYPES = {"BIGINT": "bigint", "INTEGER": "integer", "VARCHAR": "text", "DATE": "date", "DOUBLE": "double precision"}


def extension_path() -> Path:
    """The tpcds extension file inside the duckdb-extension-tpcds package."""
    spec = importlib.util.find_spec("duckdb_extension_tpcds")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("duckdb-extension-tpcds is not installed: pip install -e '.[bench]'")
    found = sorted(Path(spec.submodule_search_locations[0]).rglob("*.duckdb_extension"))
    if not found:
        raise SystemExit("duckdb-extension-tpcds holds no .duckdb_extension file")
    return found[-1]


def duckdb_tpcds(sf: float | None = None):
    """An in-memory DuckDB with the tpcds extension loaded (duckdb.DuckDBPyConnection), holding TPC-DS's
    data at scale factor `sf` when given (the queries need none)."""
    try:
        import duckdb
    except ImportError:
        raise SystemExit("duckdb is not installed: pip install -e '.[bench]'") from None

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension_path()}'")
    if sf is not None:
        con.execute(f"CALL dsdgen(sf={float(sf)})")
    return con


def pg_type(duck_type: str) -> str:
    if duck_type.startswith("DECIMAL"):
        return duck_type.replace("DECIMAL", "numeric")
    return _TYPES[duck_type]


def load(con, conn: psycopg.Connection, say: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Create the TPC-DS tables with their primary keys in `conn`'s database and COPY DuckDB's rows into them
    (through CSV files), then VACUUM ANALYZE. Returns the row count of each table."""
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tpcds-") as folder:
        for table, key in PRIMARY_KEYS.items():
            columns = con.execute(f"DESCRIBE {table}").fetchall()
            definition = [
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type(kind))) for name, kind, *_ in columns
            ]
            definition.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key))))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(", ").join(definition)))
            path = Path(folder) / f"{table}.csv"
            con.execute(f"COPY {table} TO '{path}' (FORMAT csv, HEADER false)")
            copy = sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(sql.Identifier(table))
            with conn.cursor() as cur, cur.copy(copy) as pipe, path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    pipe.write(block)
            path.unlink()
            counts[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            say(f"loaded {table}: {counts[table]:,} rows")
    conn.execute("VACUUM (ANALYZE)")
    return counts


@dataclass
class Query:
    number: int
    duckdb: str
    text: str  # as PostgreSQL runs it
    left_out: str = ""  # why it does not run on PostgreSQL, when it does not


def _postgres(text: str) -> str:
    """sqlglot's DuckDB-to-PostgreSQL conversion, plus one fix of its own: DuckDB's `/` divides as a double,
    which sqlglot writes as `CAST(x AS DOUBLE PRECISION) / y`, and PostgreSQL has no round(double, int), so
    the first argument of a two-argument round() becomes numeric (queries 2 and 78)."""
    import sqlglot
    from sqlglot import exp

    trees = sqlglot.parse(text, read="duckdb")
    if len(trees) != 1 or trees[0] is None:
        raise ValueError(f"{len(trees)} statements")
    tree = trees[0]
    for node in tree.find_all(exp.Round):
        if node.args.get("decimals") is not None:
            node.set("this", exp.cast(node.this, exp.DataType.build("DECIMAL")))
    return tree.sql(dialect="postgres", pretty=True)


def queries(con, conn: psycopg.Connection, numbers: set[int] | None = None) -> list[Query]:
    """The 99 queries in PostgreSQL's dialect (sqlglot from DuckDB's), each checked with EXPLAIN on `conn`:
    one that PostgreSQL refuses gets `left_out` set to the reason."""
    result = []
    for number, text in con.execute("SELECT query_nr, query FROM tpcds_queries() ORDER BY 1").fetchall():
        if numbers and number not in numbers:
            continue
        query = Query(number, text, "")
        try:
            query.text = _postgres(text)
        except Exception as exc:  # sqlglot's parse and generate errors have no common base worth naming
            query.left_out = f"sqlglot: {str(exc).splitlines()[0]}"
            result.append(query)
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("EXPLAIN ") + sql.SQL(query.text))
        except psycopg.Error as exc:
            query.left_out = f"PostgreSQL: {(exc.diag.message_primary or str(exc)).strip()}"
        result.append(query)
    return result


def queries_file(chosen: list[Query]) -> str:
    """The queries as one SQL file, each after a `-- TPC-DS query N` line."""
    return "".join(f"-- TPC-DS query {q.number}\n{q.text.strip().rstrip(';')};\n\n" for q in chosen)


def clean_one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
