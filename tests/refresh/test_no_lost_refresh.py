"""No lost refresh: concurrent writers (some SERIALIZABLE), two processors at once and injected refresh failures;
once writes stop and the queue settles, every watched view equals a fresh run of its query."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import psycopg

from pgops.refresh import process, queue, watch
from tests.refresh.conftest import differs_from_query

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, grp integer NOT NULL, qty integer NOT NULL);
INSERT INTO items SELECT i, i % 10, 1 FROM generate_series(1, 200) i;
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, grp integer NOT NULL, amount integer NOT NULL);
CREATE TABLE chaos (fail boolean NOT NULL);
INSERT INTO chaos VALUES (false);
CREATE MATERIALIZED VIEW item_totals AS SELECT grp, count(*) AS n, sum(qty) AS qty FROM items GROUP BY grp;
CREATE UNIQUE INDEX ON item_totals (grp);
-- fails to refresh while chaos.fail is set
CREATE MATERIALIZED VIEW event_totals AS
    SELECT grp, count(*) AS n, sum(amount) AS amount FROM events
    WHERE 1 / (SELECT CASE WHEN fail THEN 0 ELSE 1 END FROM chaos) = 1 GROUP BY grp;
CREATE UNIQUE INDEX ON event_totals (grp);
-- reads another watched view: refreshed after it, and made stale by its refresh
CREATE MATERIALIZED VIEW grand AS SELECT 1 AS k, sum(n) AS items, sum(qty) AS qty FROM item_totals;
CREATE UNIQUE INDEX ON grand (k);
-- no unique index: plain refreshes
CREATE MATERIALIZED VIEW joined AS
    SELECT i.grp, count(e.id) AS events FROM items i LEFT JOIN events e ON e.grp = i.grp GROUP BY i.grp;
"""
VIEWS = ("public.item_totals", "public.event_totals", "public.grand", "public.joined")
WRITE_SECONDS = 6


def _read_committed_writer(dsn: str, seed: int, stop: threading.Event, stats: Counter) -> None:
    rnd = random.Random(seed)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            for _ in range(rnd.randint(1, 3)):
                action = rnd.random()
                if action < 0.4:
                    conn.execute(
                        "UPDATE items SET qty = qty + %s WHERE id = %s", (rnd.randint(-3, 5), rnd.randint(1, 200))
                    )
                elif action < 0.8:
                    conn.execute(
                        "INSERT INTO events (grp, amount) VALUES (%s, %s)", (rnd.randint(0, 9), rnd.randint(1, 9))
                    )
                else:
                    conn.execute("DELETE FROM events WHERE id = (SELECT min(id) FROM events)")
            time.sleep(rnd.random() * 0.03)  # in progress while processors fold and refresh
            if rnd.random() < 0.1:
                conn.rollback()
                stats["rolled back"] += 1
            else:
                conn.commit()
                stats["committed"] += 1
            time.sleep(rnd.random() * 0.005)
        _last_write(conn, rnd, stats, item_id=1_000_000 + seed)


def _last_write(conn: psycopg.Connection, rnd: random.Random, stats: Counter, item_id: int) -> None:
    """A last write that stays in progress while the processors refresh: with the view known stale it left no
    mark, so only the processors' wait for open writers keeps it from being lost. Insert-only, so SERIALIZABLE
    writers can't conflict with each other over it."""
    conn.execute("INSERT INTO items VALUES (%s, %s, 100)", (item_id, rnd.randint(0, 9)))
    conn.execute("INSERT INTO events (grp, amount) VALUES (%s, 100)", (rnd.randint(0, 9),))
    time.sleep(0.1 + rnd.random() * 0.6)
    conn.commit()
    stats["last writes"] += 1


def _serializable_writer(dsn: str, seed: int, stop: threading.Event, stats: Counter) -> None:
    """Insert-only SERIALIZABLE transactions: nothing in their own work can conflict, so any serialization
    failure would be pgops' doing."""
    rnd = random.Random(seed)
    next_id = 10_000 * seed
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        while not stop.is_set():
            try:
                for _ in range(rnd.randint(1, 3)):
                    next_id += 1
                    conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (next_id, rnd.randint(0, 9), 1))
                    conn.execute("INSERT INTO events (grp, amount) VALUES (%s, %s)", (rnd.randint(0, 9), 1))
                time.sleep(rnd.random() * 0.03)
                conn.commit()
                stats["serializable committed"] += 1
            except psycopg.errors.SerializationFailure:
                conn.rollback()
                stats["serialization failures"] += 1
            time.sleep(rnd.random() * 0.005)
        _last_write(conn, rnd, stats, item_id=1_000_000 + seed)


def _chaos(dsn: str, stop: threading.Event, stats: Counter) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(0.8):
            conn.execute("UPDATE chaos SET fail = true")
            stats["failures injected"] += 1
            stop.wait(0.4)
            conn.execute("UPDATE chaos SET fail = false")


def _processor(dsn: str, settings, stop: threading.Event, outcomes: list) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            outcomes += process.process_due(conn, settings.refresh)
            stop.wait(0.05)


def _settled(conn) -> bool:
    views = queue.watched_views(conn)
    marks = conn.execute("SELECT count(*) FROM pgops.refresh_marks").fetchone()[0]
    return marks == 0 and all(v.stale_since is None and v.failure_count == 0 for v in views)


def test_no_lost_refresh_under_concurrent_writers_processors_and_failures(conn, dsn, installed):
    conn.execute(SCHEMA)
    for view in VIEWS:
        watch.watch(
            conn,
            view,
            replace(installed.refresh, debounce=timedelta(milliseconds=200), max_wait=timedelta(milliseconds=600)),
            concurrently=view != "public.joined",
        )
    stats: Counter = Counter()
    stop_writes, stop_processing = threading.Event(), threading.Event()
    outcomes: list[list[process.RefreshOutcome]] = [[], []]
    writers = [
        threading.Thread(target=_read_committed_writer, args=(dsn, 1, stop_writes, stats)),
        threading.Thread(target=_read_committed_writer, args=(dsn, 2, stop_writes, stats)),
        threading.Thread(target=_serializable_writer, args=(dsn, 3, stop_writes, stats)),
        threading.Thread(target=_serializable_writer, args=(dsn, 4, stop_writes, stats)),
        threading.Thread(target=_chaos, args=(dsn, stop_writes, stats)),
    ]
    processors = [threading.Thread(target=_processor, args=(dsn, installed, stop_processing, out)) for out in outcomes]
    for thread in writers + processors:
        thread.start()
    try:
        time.sleep(WRITE_SECONDS)
    finally:
        stop_writes.set()
        for thread in writers:
            thread.join()
    conn.execute("UPDATE chaos SET fail = false")
    try:
        deadline = time.monotonic() + 15
        while not _settled(conn) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop_processing.set()
        for thread in processors:
            thread.join()

    assert stats["serialization failures"] == 0, stats
    assert stats["last writes"] == 4
    assert stats["committed"] > 50 and stats["serializable committed"] > 50 and stats["failures injected"] >= 3
    results = [Counter(o.outcome for o in out) for out in outcomes]
    assert all(r["refreshed"] > 0 for r in results), results  # both processors did refresh
    assert sum(r["failed"] for r in results) > 0, results  # the injected failures hit
    failed_views = {o.view for out in outcomes for o in out if o.outcome == "failed"}
    assert failed_views == {"public.event_totals"}
    assert _settled(conn), queue.watched_views(conn)
    assert {view: differs_from_query(conn, view) for view in VIEWS} == dict.fromkeys(VIEWS, 0)
