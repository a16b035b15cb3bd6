"""The cleanup job against a real PostgreSQL: what goes, what stays, locks, kills, limits, partitions."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import hypothesis
import psycopg
import pytest
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from pgops.cleanup.policy import inspect
from pgops.cleanup.runner import BatchResult, RunOptions, run_policy
from pgops.config import CleanupPolicy, CleanupSettings, Settings
from pgops.errors import PgopsError
from tests.conftest import create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
POLICY = CleanupPolicy(table="public.items", expired_column="expires_at", batch_size=50, pause=timedelta(0))


def make_items(conn: psycopg.Connection, expired: int, live: int, *, index: bool = True) -> None:
    """`items`: `expired` rows already past expires_at (1 s apart, oldest first by id), `live` rows a day ahead."""
    conn.execute(
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, expires_at timestamptz, note text)"
    )
    conn.execute(
        "INSERT INTO items (expires_at, note) SELECT now() - interval '1 hour' - (%s - g) * interval '1 s', 'old' "
        "FROM generate_series(1, %s) g",
        (expired, expired),
    )
    conn.execute(
        "INSERT INTO items (expires_at, note) SELECT now() + interval '1 day', 'live' FROM generate_series(1, %s)",
        (live,),
    )
    if index:
        conn.execute("CREATE INDEX ON items (expires_at)")
    conn.execute("ANALYZE items")


def counts(conn: psycopg.Connection) -> tuple[int, int]:
    """(expired rows left, live rows left)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE expires_at < now()), count(*) FILTER (WHERE note = 'live') FROM items"
    ).fetchone()
    return row[0], row[1]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# (expired, live) shapes that make a run walk the heap (most rows match) or the index (few do)
WALKS = pytest.mark.parametrize(("walk", "expired", "live"), [("heap", 1000, 300), ("index", 400, 8000)])


@WALKS
def test_only_rows_expired_at_deletion_time_go(dsn, conn, walk, expired, live):
    make_items(conn, expired=expired, live=live)
    # The newest expired rows go last (index order); a batch in between makes some of them live again, and
    # another session holds one of them mid-update (uncommitted) until the run is over.
    revived = [r[0] for r in conn.execute("SELECT id FROM items WHERE note = 'old' ORDER BY id DESC LIMIT 20")]
    held = revived.pop()
    other = psycopg.connect(dsn)
    other.execute("UPDATE items SET expires_at = now() + interval '1 day', note = 'held' WHERE id = %s", (held,))

    def revive(batch: BatchResult) -> None:
        if batch.number == 1:
            conn.execute("UPDATE items SET expires_at = now() + interval '1 day' WHERE id = ANY(%s)", (revived,))

    before = metric("pgops_cleanup_rows_deleted_total", policy="items")
    result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=revive))
    other.commit()
    other.close()

    assert result.status == "done" and result.walks == {"public.items": walk}
    assert result.batches > 2  # several short transactions, not one
    assert result.rows_deleted == expired - 20
    remaining = {r[0] for r in conn.execute("SELECT id FROM items WHERE note <> 'live'")}
    assert remaining == {*revived, held}
    assert counts(conn) == (0, live)
    assert metric("pgops_cleanup_rows_deleted_total", policy="items") - before == expired - 20
    assert metric("pgops_cleanup_rows_left", policy="items") == 1  # the held row: still expired when counted
    assert 0 <= metric("pgops_cleanup_seconds_since_last_success", policy="items") < 60


@WALKS
def test_rows_locked_by_others_are_skipped_not_waited_on(dsn, conn, walk, expired, live):
    make_items(conn, expired=expired, live=live)
    holder = psycopg.connect(dsn)
    held = holder.execute("SELECT id FROM items WHERE note = 'old' ORDER BY expires_at LIMIT 30 FOR UPDATE").fetchall()
    # Were the run to wait on those rows, it would sit out the whole lock_timeout and then fail.
    settings = Settings(cleanup=CleanupSettings(lock_timeout=timedelta(seconds=20)))
    started = time.monotonic()
    try:
        result = run_policy(dsn, "items", POLICY, settings)
    finally:
        elapsed = time.monotonic() - started
        holder.rollback()
        holder.close()
    assert elapsed < settings.cleanup.lock_timeout.total_seconds()
    assert result.status == "done" and result.walks == {"public.items": walk}
    assert result.rows_deleted == expired - 30
    assert result.rows_left == 30
    assert {r[0] for r in conn.execute("SELECT id FROM items WHERE note = 'old'")} == {r[0] for r in held}


def test_run_stops_at_max_rows_and_max_runtime(dsn, conn):
    make_items(conn, expired=5000, live=10)
    result = run_policy(dsn, "items", dataclasses.replace(POLICY, max_rows=120), Settings())
    assert (result.status, result.rows_deleted) == ("limit", 120)
    assert counts(conn) == (4880, 10)
    slow = dataclasses.replace(POLICY, batch_size=10, pause=timedelta(seconds=0.3), max_runtime=timedelta(seconds=1))
    result = run_policy(dsn, "items", slow, Settings())
    assert result.status == "limit" and "max_runtime" in result.reason
    assert 0 < result.rows_deleted < 4880
    assert result.seconds < 1 + 0.5  # the pause before the deadline is cut short


def test_stop_request_between_batches(dsn, conn):
    make_items(conn, expired=3000, live=0)
    batches: list[BatchResult] = []
    result = run_policy(
        dsn, "items", POLICY, Settings(), RunOptions(should_stop=lambda: len(batches) >= 2, on_batch=batches.append)
    )
    assert result.status == "stopped"
    assert result.rows_deleted == sum(b.deleted for b in batches) and len(batches) == 2
    assert counts(conn)[0] == 3000 - result.rows_deleted


def test_killed_mid_run_keeps_committed_batches_and_next_run_finishes(dsn, conn):
    make_items(conn, expired=4000, live=500)
    command = [sys.executable, "-m", "pgops", "--dsn", dsn, "cleanup", "run", "--table", "public.items"]
    command += ["--expired-column", "expires_at", "--batch-size", "20", "--pause", "300ms"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while counts(conn)[0] == 4000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    expired_left, live_left = counts(conn)
    assert 0 < expired_left < 4000  # some batches committed, the run did not finish
    assert live_left == 500
    # Only whole batches, oldest first: what is left is exactly the newest `expired_left` expired rows.
    oldest_left = conn.execute("SELECT min(id) FROM items WHERE note = 'old'").fetchone()[0]
    assert oldest_left == 4000 - expired_left + 1

    result = run_policy(dsn, "items", POLICY, Settings())
    assert (result.status, result.rows_deleted) == ("done", expired_left)
    assert counts(conn) == (0, 500)


def test_bad_policies_fail_before_deleting(pg_server, dbname, dsn, conn):
    make_items(conn, expired=50, live=5)
    bad = {
        "table": (
            dataclasses.replace(POLICY, table="public.itemz"),
            "table public.itemz does not exist; did you mean public.items?",
        ),
        "column": (
            dataclasses.replace(POLICY, expired_column="expires"),
            "column expires does not exist in public.items",
        ),
        "type": (dataclasses.replace(POLICY, expired_column="note"), "column public.items.note is text"),
        "where": (dataclasses.replace(POLICY, where="nonsense = 1"), 'column "nonsense" does not exist'),
    }
    for name, (policy, message) in bad.items():
        with pytest.raises(PgopsError) as err:
            run_policy(dsn, name, policy, Settings())
        assert message in err.value.message
    conn.execute("CREATE ROLE cleanup_app LOGIN")
    conn.execute("GRANT SELECT ON items TO cleanup_app")
    try:
        role_dsn = pg_server.database_dsn(dbname, user="cleanup_app")
        with pytest.raises(PgopsError) as err:
            run_policy(role_dsn, "items", POLICY, Settings())
        assert "role cleanup_app lacks DELETE, UPDATE on public.items" in err.value.message
        assert counts(conn) == (50, 5)
        grant = err.value.message.split("fix: ", 1)[1]
        conn.execute(grant)  # the statement the message gives is the one that fixes it
        result = run_policy(role_dsn, "items", POLICY, Settings())
        assert (result.status, result.rows_deleted) == ("done", 50)
    finally:
        conn.execute("DROP OWNED BY cleanup_app")
        conn.execute("DROP ROLE cleanup_app")


def test_unhealthy_database_pauses_with_reason(dsn, conn):
    make_items(conn, expired=100, live=0)
    # Any lock waiter is too many: the database never looks healthy, so the run only pauses.
    settings = Settings(cleanup=CleanupSettings(max_lock_waiters=-1, throttle_pause=timedelta(seconds=0.2)))
    before = metric("pgops_cleanup_throttled_total", policy="items", reason="lock_waiters")
    policy = dataclasses.replace(POLICY, max_runtime=timedelta(seconds=1))
    result = run_policy(dsn, "items", policy, settings)
    assert result.status == "limit" and result.rows_deleted == 0
    assert result.throttled["lock_waiters"] >= 2
    assert result.throttled_seconds > 0.5
    assert metric("pgops_cleanup_throttled_total", policy="items", reason="lock_waiters") - before >= 2


def test_one_run_per_policy_at_a_time(dsn, conn):
    make_items(conn, expired=10, live=0)
    conn.execute("SELECT pg_advisory_lock(hashtextextended('pgops.cleanup:items', 0))")
    result = run_policy(dsn, "items", POLICY, Settings())
    assert result.status == "skipped" and "another pgops run" in result.reason
    assert counts(conn)[0] == 10
    conn.execute("SELECT pg_advisory_unlock_all()")
    assert run_policy(dsn, "items", POLICY, Settings()).rows_deleted == 10


def test_partitioned_table_cleans_each_partition_and_offers_to_drop_expired_ones(dsn, conn):
    conn.execute(
        "CREATE TABLE logs (id bigint, created_at timestamptz NOT NULL, path text) PARTITION BY RANGE (created_at)"
    )
    conn.execute("CREATE TABLE logs_old PARTITION OF logs FOR VALUES FROM ('2000-01-01') TO ('2001-01-01')")
    conn.execute("CREATE TABLE logs_now PARTITION OF logs FOR VALUES FROM ('2001-01-01') TO (MAXVALUE)")
    conn.execute("CREATE INDEX ON logs (created_at)")
    conn.execute(
        "INSERT INTO logs SELECT g, '2000-06-01'::timestamptz + g * interval '1 min', '/a' "
        "FROM generate_series(1, 300) g"
    )
    conn.execute(
        "INSERT INTO logs SELECT g, now() - g * interval '1 day' + interval '12 hours', '/b' "
        "FROM generate_series(1, 60) g"
    )
    conn.execute("ANALYZE logs")
    policy = CleanupPolicy(
        table="public.logs", older_than_column="created_at", older_than=timedelta(days=30), batch_size=40
    )
    checked = inspect(conn, "logs", policy)
    assert [leaf.relation.qualified for leaf in checked.table.leaves] == ["public.logs_now", "public.logs_old"]

    dry = run_policy(dsn, "logs", policy, Settings(), RunOptions(dry_run=True))
    assert (dry.would_delete, dry.counted) == (300 + 30, True)
    assert dry.expired_partitions == [
        'ALTER TABLE "public"."logs" DETACH PARTITION "public"."logs_old" CONCURRENTLY; DROP TABLE "public"."logs_old";'
    ]
    assert "LockRows" in dry.plan and "Delete on logs_now" in dry.plan
    assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 360

    # a row the policy's `where` leaves NULL is kept by every batch: its partition is not one to drop whole
    conn.execute("UPDATE logs SET path = NULL WHERE id = 1 AND created_at < '2001-01-01'")
    keeps_nulls = dataclasses.replace(policy, where="path <> '/x'")
    assert run_policy(dsn, "logs", keeps_nulls, Settings(), RunOptions(dry_run=True)).expired_partitions == []
    conn.execute("UPDATE logs SET path = '/a' WHERE path IS NULL")

    tables: set[str] = set()
    result = run_policy(dsn, "logs", policy, Settings(), RunOptions(on_batch=lambda b: tables.add(b.table)))
    assert tables == {"public.logs_old", "public.logs_now"}
    assert result.rows_deleted == 330
    left = conn.execute("SELECT min(created_at) > now() - interval '30 days', count(*) FROM logs").fetchone()
    assert left == (True, 30)


def test_few_matching_rows_walk_the_index_many_walk_the_heap(dsn, conn):
    make_items(conn, expired=100, live=3000)  # about 3% match: batches in index order
    batches: list[BatchResult] = []
    result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=batches.append))
    assert result.walks == {"public.items": "index"}
    assert {b.walk for b in batches} == {"index"} and len(batches) >= 2
    assert counts(conn) == (0, 3000)
    conn.execute("UPDATE items SET expires_at = now() - interval '1 day' WHERE id % 4 = 0")  # 25% match now
    conn.execute("ANALYZE items")
    result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=batches.append))
    assert result.walks == {"public.items": "heap"}
    assert (result.rows_deleted, counts(conn)) == (750, (0, 2250))


def test_rows_left_without_an_index_comes_from_the_estimate_before_the_run(dsn, conn):
    make_items(conn, expired=2000, live=100, index=False)
    conn.execute("INSERT INTO items (expires_at, note) VALUES (now() - interval '1 hour', 'held')")
    holder = psycopg.connect(dsn)
    holder.execute("SELECT 1 FROM items WHERE note = 'held' FOR UPDATE")
    try:
        result = run_policy(dsn, "items", POLICY, Settings())
    finally:
        holder.rollback()
        holder.close()
    assert (result.rows_deleted, result.warnings[0].split(":")[0]) == (2000, "no index on public.items (expires_at)")
    assert result.rows_left is not None and result.rows_left <= 20  # planner estimate (~2000) less 2000 deleted


def wal_bytes(conn: psycopg.Connection, statement_or_call) -> int:
    """WAL the server wrote while `statement_or_call` ran (a statement for `conn`, or a function to call)."""
    before = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    if callable(statement_or_call):
        statement_or_call()
    else:
        conn.execute(statement_or_call)
    return int(conn.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (before,)).fetchone()[0])


def test_heap_walk_writes_each_deleted_row_once(dsn, conn):
    """Locking every row before deleting it writes the row twice (twice the WAL of a plain DELETE); the heap
    walk's single-pass DELETE writes it once, and still takes the rows that were locked once and let go."""
    make_items(conn, expired=20_000, live=2_000)
    conn.execute("CREATE TABLE twin AS SELECT * FROM items")
    conn.execute("VACUUM items, twin")
    # rows a finished transaction locked (FK checks do this): their xmax stays set until the row is frozen
    with conn.transaction():
        conn.execute("SELECT 1 FROM items WHERE note = 'old' AND id % 100 = 0 FOR SHARE")
    plain = wal_bytes(conn, "DELETE FROM twin WHERE expires_at < now()")
    results = []
    policy = dataclasses.replace(POLICY, batch_size=5000)
    pgops = wal_bytes(conn, lambda: results.append(run_policy(dsn, "items", policy, Settings())))
    result = results[0]
    assert (result.status, result.walks, result.rows_deleted) == ("done", {"public.items": "heap"}, 20_000)
    assert counts(conn) == (0, 2_000)
    assert pgops < 1.4 * plain, f"pgops wrote {pgops} bytes of WAL, a plain DELETE {plain}"


def test_heap_batch_that_meets_a_lock_is_redone_two_pass(dsn, conn):
    """A lock the single-pass DELETE would wait on (here the table's, in a row's case the race between reading
    and deleting it) ends it after FRESH_DELETE_LOCK_TIMEOUT; the batch is redone with SKIP LOCKED, nothing lost."""
    make_items(conn, expired=3000, live=100)
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE items IN SHARE MODE")  # DELETE waits on it, SELECT ... FOR UPDATE does not
    release = threading.Timer(0.5, holder.rollback)
    batches: list[BatchResult] = []
    release.start()
    try:
        result = run_policy(dsn, "items", POLICY, Settings(), RunOptions(on_batch=batches.append))
    finally:
        release.join()
        holder.close()
    assert (result.status, result.rows_deleted, counts(conn)) == ("done", 3000, (0, 100))
    assert batches[0].redone and result.redone_batches >= 1
    assert not batches[-1].redone  # once the lock is gone, batches take the single pass again


@WALKS
@pytest.mark.parametrize(
    ("kept", "where"),
    [
        # Heap batches go to the server without parameters, index batches with them: a `%` must reach the
        # server as one `%` either way.
        ("kept 50%", "note <> 'kept 50%'"),
        # A `--` comment runs to the end of its line: it must not comment out what pgops writes after it.
        ("audit", "note <> 'audit' -- keep audit rows"),
    ],
)
def test_where_predicate_means_what_it_says(dsn, conn, walk, expired, live, kept, where):
    make_items(conn, expired=expired, live=live)
    conn.execute("UPDATE items SET note = %s WHERE note = 'old' AND id %% 10 = 0", (kept,))
    conn.execute("ANALYZE items")
    n_kept = conn.execute("SELECT count(*) FROM items WHERE note = %s", (kept,)).fetchone()[0]
    policy = dataclasses.replace(POLICY, where=where)
    dry = run_policy(dsn, "items", policy, Settings(), RunOptions(dry_run=True))
    result = run_policy(dsn, "items", policy, Settings())
    assert (dry.would_delete, dry.counted) == (expired - n_kept, True)
    assert result.walks == {"public.items": walk} and result.rows_deleted == expired - n_kept
    assert result.rows_left == 0
    left = conn.execute("SELECT note, count(*) FROM items GROUP BY note ORDER BY note").fetchall()
    assert left == sorted([(kept, n_kept), ("live", live)])


ESCAPING_WHERE = [
    # it closes the parenthesis pgops puts around it: as one query string, the DROP would run
    ("true); DROP TABLE items; SELECT (true", "closes a parenthesis it did not open"),
    # it closes the parenthesis and comments out the rest of the line: in the heap walk's DELETE, the guard
    # that keeps it from waiting on rows others hold
    ("true) --", "closes a parenthesis it did not open"),
    # it closes the parenthesis and opens another: the expiry condition is ORed away and live rows go
    ("true) OR (1=1", "closes a parenthesis it did not open"),
    # the same through a dollar-quoted string a simpler scanner would read differently
    ("$a$)$a$ <> '' ) OR (true", "closes a parenthesis it did not open"),
    ("E'\\'' ) OR (true", "closes a parenthesis it did not open"),
    ("(true", "leaves 1 parenthesis open"),
    # it turns standard_conforming_strings off, so the next batch reads '\' as an escaped quote: live rows went
    (
        "set_config('standard_conforming_strings', 'off', false) IS NOT NULL AND note <> '\\' "
        "AND note <> ') OR true OR (true --'",
        "has a backslash in a '...' string",
    ),
    ("note = $1", "holds a parameter"),
    ("true; DELETE FROM items", "holds a ';'"),
    ("'open", "does not read as SQL"),
    ("/* true) OR (true", "does not read as SQL"),
    ("-- nothing", "is empty"),
    ("true AS x, 1", "is not an expression"),
]


@WALKS
@pytest.mark.parametrize(("where", "error"), ESCAPING_WHERE)
def test_where_predicate_escaping_its_parenthesis_fails_before_anything_runs(
    dsn, conn, walk, expired, live, where, error
):
    make_items(conn, expired=expired, live=live)
    with pytest.raises(PgopsError) as err:
        run_policy(dsn, "items", dataclasses.replace(POLICY, where=where), Settings())
    assert error in err.value.message
    assert counts(conn) == (expired, live)  # the table is still there, every row with it


# Pieces a hostile or careless predicate is made of: quotes of every kind, comments, parentheses, separators.
WHERE_PIECES = [
    "true",
    "false",
    "1=1",
    "note <> 'x'",
    "OR",
    "AND",
    "NOT",
    "(",
    ")",
    "[",
    "]",
    ";",
    "--",
    "/*",
    "*/",
    "\n",
    "'",
    "''",
    "$a$",
    "$$",
    "E'\\'",
    "U&'\\0061'",
    '"',
    "note",
    "::text",
    "IS NULL",
    "id",
    "<",
    "100",
    "%",
]
_pieces = st.lists(st.sampled_from(WHERE_PIECES), max_size=6).map(" ".join)
_side = st.one_of(st.sampled_from(["true", "1=1", "note <> 'x'", "id < 100"]), _pieces)
# Free text from the pieces, and text shaped like an escape (`A) OR (B`) whose parts are free text.
WHERE_TEXT = st.one_of(
    _pieces,
    st.builds("{}) {} ({}".format, _side, st.sampled_from(["OR", "OR NOT", "--\nOR", "/**/OR"]), _side),
)


@pytest.fixture(scope="module")
def where_template(pg_server):
    name = create_database(pg_server, "pgops_where")
    with psycopg.connect(pg_server.database_dsn(name), autocommit=True) as conn:
        make_items(conn, expired=6, live=4)
    yield name
    drop_database(pg_server, name)


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(WHERE_TEXT)
def test_any_where_is_refused_or_deletes_only_expired_rows(pg_server, where_template, where):
    dsn = pg_server.database_dsn(where_template)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction(force_rollback=False):
        conn.execute("DELETE FROM items")
        conn.execute(
            "INSERT INTO items (expires_at, note) SELECT now() - interval '1 hour', 'old' FROM generate_series(1, 6)"
        )
        conn.execute(
            "INSERT INTO items (expires_at, note) SELECT now() + interval '1 day', 'live' FROM generate_series(1, 4)"
        )
    with contextlib.suppress(PgopsError):  # refused, or failed: either way nothing but expired rows may be gone
        run_policy(dsn, "items", dataclasses.replace(POLICY, where=where), Settings())
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE note = 'live'").fetchone()[0] == 4, where
