"""The demo application: schema, data at realistic volumes, and a short workload of its typical statements.

The demo, the tests and the benchmarks use it so every pgops job meets the shapes it was built for: a
materialized view read by dashboards, idempotency keys and sessions that expire, request logs that pile up,
and a multi-tenant customers/orders pair missing the indexes its queries need.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgops.output import progress
from pgops.resources import read_sql

TENANTS = 50
APPLICATION_NAME = "demo-app"


def load_schema(conn: psycopg.Connection) -> None:
    """Create the demo tables and view in the connection's database (in `public`)."""
    with conn.transaction():
        conn.execute(read_sql("demo/schema.sql"))


def generate(conn: psycopg.Connection, scale: float = 1.0, seed: float | None = None) -> None:
    """Fill the demo tables; `scale` 1.0 is about 1.1 M rows, 0.01 is enough for tests. A `seed` (-1 to 1, as
    PostgreSQL's setseed takes it) makes the same data each time."""
    with conn.transaction():
        conn.execute("SELECT set_config('pgops.demo_scale', %s, true)", (str(float(scale)),))
        if seed is not None:
            conn.execute("SELECT setseed(%s)", (seed,))
        conn.execute(read_sql("demo/generate.sql"))
    for table in ("funds", "fund_trades", "customers", "orders", "idempotency_keys", "sessions", "request_logs"):
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


@dataclass(frozen=True)
class WorkloadResult:
    statements: int
    reads: int
    writes: int
    seconds: float


@dataclass(frozen=True)
class _Sizes:
    customers: int
    orders: int
    funds: int


Statement = Callable[[psycopg.Connection, random.Random, _Sizes], None]


def _email(customer_id: int) -> tuple[int, str]:
    tenant = 1 + customer_id % TENANTS
    return tenant, f"user{customer_id}@tenant{tenant}.example"


def _customer_by_email(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    tenant, email = _email(rnd.randint(1, n.customers))
    conn.execute("SELECT id, name FROM customers WHERE tenant_id = %s AND email = %s", (tenant, email)).fetchall()


def _orders_of_customer_by_email(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    tenant, email = _email(rnd.randint(1, n.customers))
    conn.execute(
        "SELECT o.id, o.status, o.total, o.created_at FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE c.tenant_id = %s AND c.email = %s ORDER BY o.created_at DESC",
        (tenant, email),
    ).fetchall()


def _recent_orders_of_customer(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute(
        "SELECT id, status, total, created_at FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 10",
        (rnd.randint(1, n.customers),),
    ).fetchall()


def _open_orders(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute(
        "SELECT id, customer_id, total, created_at FROM orders WHERE status = 'open' ORDER BY created_at DESC LIMIT 20"
    ).fetchall()


def _tenant_errors_last_hour(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute(
        "SELECT count(*) FROM request_logs WHERE tenant_id = %s AND status >= 500 "
        "AND created_at >= now() - interval '1 hour'",
        (rnd.randint(1, TENANTS),),
    ).fetchone()


def _idempotency_lookup(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute("SELECT response FROM idempotency_keys WHERE key = %s", (f"idem-{rnd.randint(1, 10**6)}",))


def _fund_dashboard(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute("SELECT fund_id, name, trades, volume FROM fund_stats ORDER BY volume DESC LIMIT 10").fetchall()


def _place_order(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    key = f"idem-{uuid.uuid4()}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO idempotency_keys (key, request_hash, response, expires_at) "
            "VALUES (%s, md5(%s), '{}', now() + interval '1 day')",
            (key, key),
        )
        conn.execute(
            "INSERT INTO orders (customer_id, status, total) VALUES (%s, 'open', %s)",
            (rnd.randint(1, n.customers), round(rnd.uniform(5, 500), 2)),
        )


def _ship_order(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute("UPDATE orders SET status = 'shipped' WHERE id = %s AND status = 'open'", (rnd.randint(1, n.orders),))


def _trade(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute(
        "INSERT INTO fund_trades (fund_id, amount) VALUES (%s, %s)",
        (rnd.randint(1, n.funds), round(rnd.uniform(-5000, 15000), 2)),
    )


def _log_request(conn: psycopg.Connection, rnd: random.Random, n: _Sizes) -> None:
    conn.execute(
        "INSERT INTO request_logs (tenant_id, path, status, duration_ms) VALUES (%s, %s, %s, %s)",
        (rnd.randint(1, TENANTS), "/api/orders", rnd.choice((200, 200, 201, 404, 500)), rnd.randint(1, 300)),
    )


# (statement, weight, writes?) — about 85% reads, as in the applications pgops serves.
WORKLOAD: tuple[tuple[Statement, int, bool], ...] = (
    (_customer_by_email, 25, False),
    (_orders_of_customer_by_email, 15, False),
    (_recent_orders_of_customer, 15, False),
    (_open_orders, 10, False),
    (_tenant_errors_last_hour, 5, False),
    (_idempotency_lookup, 8, False),
    (_fund_dashboard, 7, False),
    (_place_order, 6, True),
    (_ship_order, 3, True),
    (_trade, 4, True),
    (_log_request, 2, True),
)


def _sizes(dsn: str) -> _Sizes:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT max(id) FROM customers), (SELECT max(id) FROM orders), (SELECT max(id) FROM funds)"
        ).fetchone()
    return _Sizes(*(value or 1 for value in row))


def run_workload(dsn: str, statements: int = 3000, clients: int = 4, seed: int | None = None) -> WorkloadResult:
    """Run `statements` statements of the demo app's mix over `clients` connections (application `demo-app`)."""
    sizes = _sizes(dsn)
    functions = [s for s, _, _ in WORKLOAD]
    weights = [w for _, w, _ in WORKLOAD]
    writes_of = {s: is_write for s, _, is_write in WORKLOAD}
    counts = {"reads": 0, "writes": 0}
    errors: list[BaseException] = []
    lock = threading.Lock()
    base_seed = random.randrange(2**32) if seed is None else seed

    def client(index: int, share: int, advance: Callable[..., None]) -> None:
        rnd = random.Random(base_seed + index)
        try:
            with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
                for statement in rnd.choices(functions, weights, k=share):
                    statement(conn, rnd, sizes)
                    with lock:
                        counts["writes" if writes_of[statement] else "reads"] += 1
                        advance()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    start = time.monotonic()
    with progress("demo workload", total=statements) as advance:
        shares = [statements // clients + (1 if i < statements % clients else 0) for i in range(clients)]
        threads = [threading.Thread(target=client, args=(i, share, advance)) for i, share in enumerate(shares)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return WorkloadResult(statements, counts["reads"], counts["writes"], time.monotonic() - start)


def support_lookups(dsn: str, statements: int, seed: int | None = None) -> int:
    """The support desk's searches by customer name, sent to a read replica: a read the primary never sees, so
    only advice merged from the replica's pg_stat_statements finds the index it needs."""
    rnd = random.Random(seed)
    sizes = _sizes(dsn)
    with psycopg.connect(dsn, autocommit=True, application_name="support-desk") as conn:
        for _ in range(statements):
            name = f"Customer {rnd.randint(1, sizes.customers)}"
            conn.execute("SELECT id, tenant_id, email FROM customers WHERE name = %s", (name,)).fetchall()
    return statements
