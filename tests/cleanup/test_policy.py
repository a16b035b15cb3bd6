"""Policies (`pgops/cleanup/policy.py`): shape, ready-made ones, one-off ones, validation against the catalog, and
a `where` that means what it says or is refused before anything runs."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta

import hypothesis
import psycopg
import pytest
from hypothesis import strategies as st

from pgops.cleanup.policy import (
    READY_MADE,
    LeafInfo,
    Relation,
    TableInfo,
    check_table,
    describe_condition,
    missing_table_message,
    one_off_policy,
    resolve_policies,
)
from pgops.cleanup.runner import RunOptions, run_policy
from pgops.config import CleanupPolicy, CleanupSettings, Settings
from pgops.errors import PgopsError
from tests.cleanup.helpers import POLICY, WALKS, counts, make_items
from tests.conftest import create_database, drop_database


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of expired_column or older_than_column"),
        ({"expired_column": "a", "older_than_column": "b"}, "exactly one of"),
        ({"older_than_column": "b"}, "older_than_column needs older_than"),
        ({"expired_column": "a", "older_than": timedelta(days=1)}, "older_than needs older_than_column"),
        ({"expired_column": "a", "batch_size": 0}, "batch_size"),
        ({"expired_column": "a", "schedule": "every 5 minutes"}, "is not a crontab expression"),
    ],
)
def test_policy_shape_errors(kwargs, message):
    settings = Settings(cleanup=CleanupSettings(policies={"p": CleanupPolicy(table="t", **kwargs)}, ready_made=[]))
    with pytest.raises(PgopsError, match=message):
        resolve_policies(settings)


def test_configured_policy_replaces_ready_made_and_ready_made_can_be_chosen():
    mine = CleanupPolicy(table="app.sessions", expired_column="valid_until")
    settings = Settings(cleanup=CleanupSettings(policies={"sessions": mine}, ready_made=["sessions", "request_logs"]))
    policies = resolve_policies(settings)
    assert list(policies) == ["sessions", "request_logs"]
    assert policies["sessions"] is mine
    assert policies["request_logs"] is READY_MADE["request_logs"]
    with pytest.raises(PgopsError, match="no ready-made policy nope"):
        resolve_policies(Settings(cleanup=CleanupSettings(ready_made=["nope"])))


def test_one_off_policy_from_options():
    policy = one_off_policy("public.request_logs", older_than="created_at=30d")
    assert (policy.older_than_column, policy.older_than) == ("created_at", timedelta(days=30))
    assert describe_condition(policy).startswith('"created_at" < now() - \'30 days')
    with_where = one_off_policy("t", expired_column="e", where="path LIKE '/api/%'")
    assert describe_condition(with_where) == "\"e\" < now() AND (path LIKE '/api/%'\n)"
    for bad in ({"older_than": "created_at"}, {"older_than": "=30d"}, {}):
        with pytest.raises(PgopsError):
            one_off_policy("t", **bad)
    with pytest.raises(PgopsError, match=r"SCHEMA\.TABLE"):
        one_off_policy("a.b.c", expired_column="e")


def table_info(columns, *, indexed=True, missing=()):
    relation = Relation(1, "public", "sessions")
    return TableInfo(relation, False, columns, (LeafInfo(relation, indexed, tuple(missing), 10.0),), "app")


def test_check_table_names_what_exists_and_what_fixes_it():
    policy = CleanupPolicy(table="public.sessions", expired_column="expire_at")
    with pytest.raises(PgopsError, match=r"column expire_at does not exist .* did you mean expires_at\? columns: id"):
        check_table("s", policy, table_info({"id": "int8", "expires_at": "timestamptz"}))
    policy = CleanupPolicy(table="public.sessions", expired_column="id")
    with pytest.raises(PgopsError, match="is int8; an expiry or age column must be timestamptz"):
        check_table("s", policy, table_info({"id": "int8"}))
    policy = CleanupPolicy(table="public.sessions", expired_column="expires_at")
    with pytest.raises(PgopsError, match=r"lacks DELETE .* GRANT SELECT, DELETE, UPDATE \(expires_at\)"):
        check_table("s", policy, table_info({"expires_at": "date"}, missing=["DELETE"]))
    assert check_table("s", policy, table_info({"expires_at": "timestamp"})) == []
    (warning,) = check_table("s", policy, table_info({"expires_at": "timestamp"}, indexed=False))
    assert warning.endswith('CREATE INDEX CONCURRENTLY ON "public"."sessions" ("expires_at");')


def test_missing_table_lists_close_and_existing_names():
    policy = CleanupPolicy(table="public.sesions", expired_column="expires_at")
    message = missing_table_message("s", policy, ["public.orders", "public.sessions", "public.user_sessions_archive"])
    assert "did you mean public.sessions?" in message
    assert message.endswith("tables in schema public: public.orders, public.sessions, public.user_sessions_archive")


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
