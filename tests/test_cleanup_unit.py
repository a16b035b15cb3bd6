"""Pure decisions of the cleanup job on hand-made data: batch sizing, throttling, policy shape and validation."""

from datetime import timedelta

import pytest

from pgops.cleanup.health import HealthSample, throttle_reason
from pgops.cleanup.loop import MIN_BATCH_SIZE, next_batch_size
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
from pgops.cleanup.walk import choose_walk
from pgops.config import CleanupPolicy, CleanupSettings, Settings
from pgops.errors import PgopsError


def test_batch_size_steers_toward_target_duration():
    assert next_batch_size(1000, seconds=0.4, target=0.2) == 500  # too slow: smaller
    assert next_batch_size(1000, seconds=0.15, target=0.2) == 1333  # a bit fast: a bit bigger
    assert next_batch_size(1000, seconds=0.001, target=0.2) == 2000  # at most doubles per step
    assert next_batch_size(1000, seconds=60, target=0.2) == 500  # at most halves per step
    assert next_batch_size(15, seconds=1, target=0.2) == MIN_BATCH_SIZE
    assert next_batch_size(60_000, seconds=0.01, target=0.2, largest=100_000) == 100_000


HEALTHY = HealthSample(replication_lag=None, archiver_failing=False, lock_waiters=0, autovacuum_on_table=False)


@pytest.mark.parametrize(
    ("sample", "kind"),
    [
        (HEALTHY, None),
        (HealthSample(5.0, False, 3, False), None),
        (HealthSample(31.0, False, 0, False), "replication_lag"),
        (HealthSample(None, True, 0, False), "archiver"),
        (HealthSample(None, False, 11, False), "lock_waiters"),
        (HealthSample(None, False, 0, True), "autovacuum"),
        (HealthSample(60.0, True, 50, True), "replication_lag"),  # the first reason wins
    ],
)
def test_throttle_reason(sample, kind):
    throttle = throttle_reason(sample, CleanupSettings())
    assert (throttle.kind if throttle else None) == kind


def test_throttle_on_autovacuum_can_be_turned_off():
    sample = HealthSample(None, False, 0, True)
    assert throttle_reason(sample, CleanupSettings(throttle_on_autovacuum=False)) is None


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


def test_choose_walk():
    assert choose_walk(indexed=True, matching=50, total=10_000, tid_range_scan=True) == "index"
    assert choose_walk(indexed=True, matching=5_000, total=10_000, tid_range_scan=True) == "heap"
    assert choose_walk(indexed=False, matching=0, total=10_000, tid_range_scan=True) == "heap"
    assert choose_walk(indexed=True, matching=0, total=0, tid_range_scan=True) == "index"  # never analyzed
    assert choose_walk(indexed=False, matching=0, total=10_000, tid_range_scan=False) == "index"
