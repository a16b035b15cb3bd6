"""Hand-made catalogs for the advisor's pure tests: the demo's customers/orders shapes with statistics."""

from __future__ import annotations

from pgops.advisor.model import Catalog, ColumnInfo, ExistingIndex, Statement, TableInfo


def column(name: str, n_distinct: float = -1.0, type_: str = "bigint", **extra) -> ColumnInfo:
    return ColumnInfo(name=name, type=type_, n_distinct=n_distinct, avg_width=8, **extra)


def table(schema: str, name: str, rows: float, columns: list[ColumnInfo], **extra) -> TableInfo:
    return TableInfo(
        schema=schema,
        name=name,
        reltuples=rows,
        relpages=int(rows / 50) + 1,
        size_bytes=int(rows * 160),
        columns={c.name: c for c in columns},
        **extra,
    )


def index(
    name: str,
    table_: tuple[str, str],
    keys: tuple[str | None, ...],
    include: tuple[str, ...] = (),
    *,
    unique: bool = False,
    primary: bool = False,
    constraint: str | None = None,
    valid: bool = True,
    scans: int = 10,
    predicate: str | None = None,
    opclasses: tuple[str | None, ...] = (),
) -> ExistingIndex:
    return ExistingIndex(
        schema=table_[0],
        name=name,
        table=table_,
        key_columns=keys,
        include_columns=include,
        key_opclasses=opclasses or (None,) * len(keys),
        predicate=predicate,
        method="btree",
        unique=unique,
        primary=primary,
        constraint=constraint,
        valid=valid,
        scans=scans,
        size_bytes=8192,
        definition="",
    )


def demo_catalog() -> Catalog:
    customers = table(
        "public",
        "customers",
        100_000,
        [
            column("id"),
            column("tenant_id", 50, "integer"),
            column("email", -1, "text", pattern_opclass="text_pattern_ops"),  # a non-C collation
            column("name", -0.5, "text"),
            column("created_at", -1, "timestamp with time zone", histogram_bounds=("2024-01-01", "2024-06-01")),
        ],
        n_tup_upd=100,
        n_tup_hot_upd=90,
        index_count=1,
    )
    orders = table(
        "public",
        "orders",
        500_000,
        [
            column("id"),
            column("customer_id", -0.2),
            column(
                "status",
                3,
                "text",
                most_common_vals=("shipped", "closed", "open"),
                most_common_freqs=(0.7, 0.25, 0.05),
            ),
            column("total", -0.5, "numeric(12,2)"),
            column(
                "created_at",
                -1,
                "timestamp with time zone",
                histogram_bounds=tuple(f"2024-01-{day:02d}" for day in range(1, 31)),
            ),
            column("data", None, "jsonb", btree=False),
        ],
        n_tup_upd=1000,
        n_tup_hot_upd=900,
        index_count=1,
    )
    audit = table("audit", "events", 10_000, [column("id"), column("kind", 5, "text"), column("customer_id", -0.1)])
    return Catalog(
        database="demo",
        server_version=150000,
        search_path=["public"],
        tables={t.key: t for t in (customers, orders, audit)},
        indexes=[
            index("customers_pkey", customers.key, ("id",), unique=True, primary=True, constraint="customers_pkey"),
            index("orders_pkey", orders.key, ("id",), unique=True, primary=True, constraint="orders_pkey"),
        ],
    )


def statement(query: str, calls: int = 100, total_time_ms: float = 1000.0, rows: int = 0) -> Statement:
    return Statement(query=query, calls=calls, total_time_ms=total_time_ms, rows=rows, source="test")
