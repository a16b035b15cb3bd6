"""The pure rules, on hand-made data: due-ness and back-off (SQL functions), and the status judgements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgops.refresh import queue

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


DUE_CASES = [
    (None, None, None, T0, False),  # clean
    (T0, T0, None, T0 + 29 * S, False),  # debounce not over
    (T0, T0, None, T0 + 30 * S, True),  # quiet for the debounce
    (T0, T0 + 250 * S, None, T0 + 270 * S, False),  # marked again 20 s ago
    (T0, T0 + 299 * S, None, T0 + 300 * S, True),  # max-wait: continuous writes don't starve it
    (T0, T0, T0 + 40 * S, T0 + 35 * S, False),  # backing off after a failure
    (T0, T0, T0 + 40 * S, T0 + 40 * S, True),
]


def test_refresh_is_due(conn, installed):
    """debounce 30 s, max-wait 5 min; (stale since, last mark, next attempt, now) → due."""
    for stale_since, last_mark, next_attempt, now, due in DUE_CASES:
        row = conn.execute(
            "SELECT pgops.refresh_is_due(%s, %s, interval '30 seconds', interval '5 minutes', %s, %s)",
            (stale_since, last_mark, next_attempt, now),
        ).fetchone()
        assert row[0] is due, (stale_since, last_mark, next_attempt, now)


def test_backoff_doubles_from_the_debounce_and_is_capped(conn, installed):
    backoff = [
        conn.execute("SELECT pgops.refresh_backoff(%s, interval '2 seconds', interval '30 seconds')", (n,)).fetchone()[
            0
        ]
        for n in range(1, 7)
    ]
    assert [b.total_seconds() for b in backoff] == [2, 4, 8, 16, 30, 30]


def _view(**changes) -> queue.WatchedView:
    base = dict(
        view_id=1, schema_name="public", view_name="v", debounce=30 * S, max_wait=300 * S,
        refresh_concurrently=True, stale_since=None, last_marked_at=None, last_refresh_started_at=None,
        last_refresh_finished_at=None, last_refresh_duration=None, last_concurrent_duration=None,
        last_plain_duration=None, refresh_count=0, failure_count=0, next_attempt_at=None, last_error=None,
        last_error_at=None, base_tables=["public.t"], populated=True, now=T0,
    )  # fmt: skip
    return queue.WatchedView(**{**base, **changes})


def test_plain_is_cheaper_only_when_the_concurrent_refresh_took_longer():
    assert queue.plain_is_cheaper(_view(last_concurrent_duration=3 * S, last_plain_duration=1 * S))
    assert not queue.plain_is_cheaper(_view(last_concurrent_duration=1 * S, last_plain_duration=3 * S))
    assert not queue.plain_is_cheaper(_view(last_concurrent_duration=3 * S))  # never measured plain
    assert not queue.plain_is_cheaper(
        _view(refresh_concurrently=False, last_concurrent_duration=3 * S, last_plain_duration=1 * S)
    )


def test_status_exit_code():
    fresh = _view()
    overdue = _view(stale_since=T0 - 310 * S)
    stale = _view(stale_since=T0 - 200 * S)
    assert queue.status_exit_code([fresh, stale], grace=5 * S) == 0
    assert queue.status_exit_code([fresh, overdue], grace=5 * S) == 1
    assert queue.status_exit_code([overdue], grace=20 * S) == 0
    assert queue.status_exit_code([fresh, _view(failure_count=1)], grace=5 * S) == 2
    assert queue.status_exit_code([_view(populated=None)], grace=5 * S) == 2
