"""Index size estimates against the indexes PostgreSQL actually builds: within 30% for every shape."""

from __future__ import annotations

import pytest
from psycopg import sql

from pgops.advisor.catalog import read_catalog
from pgops.advisor.model import Candidate
from pgops.advisor.size import estimate_size

T = ("public", "sized")
SHAPES = [
    Candidate(T, ("id",)),  # unique bigint
    Candidate(T, ("tenant",)),  # 50 values: deduplicated
    Candidate(T, ("email",)),  # unique text
    Candidate(T, ("created_at",)),  # timestamptz, mostly unique
    Candidate(T, ("tenant", "created_at")),
    Candidate(T, ("part", "supplier")),  # a composite join key, 4 suppliers a part
    Candidate(T, ("customer",), ("total",)),  # INCLUDE: no deduplication
    Candidate(T, ("status",)),  # 3 text values
    Candidate(T, ("total",)),  # numeric: no deduplication
]


@pytest.fixture
def sized(conn):
    conn.execute(
        """
        CREATE TABLE sized AS
        SELECT n::bigint AS id, (n % 50)::int AS tenant, 'user' || n || '@tenant' || (n % 50) || '.example' AS email,
               timestamptz '2024-01-01' + n * interval '1 minute' AS created_at,
               (n / 8)::int AS part, (n % 4)::int AS supplier, (n / 3)::bigint AS customer,
               (n % 1000)::numeric(12, 2) AS total, (ARRAY['open', 'shipped', 'closed'])[1 + n % 3] AS status
        FROM generate_series(1, 200000) n
        """
    )
    conn.execute("ANALYZE sized")
    return conn


@pytest.mark.parametrize("candidate", SHAPES, ids=lambda c: c.describe())
def test_estimate_is_within_30_percent_of_the_built_index(sized, candidate):
    estimate = estimate_size(read_catalog(sized), candidate)
    columns = sql.SQL(", ").join(map(sql.Identifier, candidate.columns))
    include = sql.SQL(" INCLUDE ({})").format(sql.SQL(", ").join(map(sql.Identifier, candidate.include)))
    sized.execute(
        sql.SQL("CREATE INDEX built ON sized ({}){}").format(columns, include if candidate.include else sql.SQL(""))
    )
    built = sized.execute("SELECT pg_relation_size('built')").fetchone()[0]
    assert 0.7 <= estimate / built <= 1.3, f"estimated {estimate:,} bytes, built {built:,}"


@pytest.mark.parametrize("analyzed", [False, True], ids=["partitions analyzed", "parent analyzed too"])
def test_a_partitioned_table_is_sized_by_its_partitions(conn, analyzed):
    """A partitioned parent has no rows of its own (reltuples -1 until ANALYZE runs on it by hand, which
    autovacuum never does): its index is the sum of its partitions' indexes."""
    conn.execute("CREATE TABLE parted (id bigint, tenant int, email text) PARTITION BY RANGE (id)")
    for low in range(0, 200000, 50000):
        conn.execute(f"CREATE TABLE parted_{low} PARTITION OF parted FOR VALUES FROM ({low}) TO ({low + 50000})")
    conn.execute("INSERT INTO parted SELECT n, n % 50, 'user' || n || '@example' FROM generate_series(0, 199999) n")
    conn.execute("ANALYZE " + ", ".join(f"parted_{low}" for low in range(0, 200000, 50000)))
    if analyzed:
        conn.execute("ANALYZE parted")
    catalog = read_catalog(conn)
    assert catalog.tables[("public", "parted")].reltuples == pytest.approx(200000, rel=0.05)
    for columns in (("tenant",), ("email",)):
        estimate = estimate_size(catalog, Candidate(("public", "parted"), columns))
        conn.execute(
            sql.SQL("CREATE INDEX built ON parted ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
        )
        built = conn.execute(
            "SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('built') WHERE isleaf"
        ).fetchone()[0]
        conn.execute("DROP INDEX built")
        assert 0.7 <= estimate / built <= 1.3, f"{columns}: estimated {estimate:,} bytes, built {built:,}"
