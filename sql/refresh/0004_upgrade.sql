-- pgops refresh, migration 0004: one processor. The loop that runs a view's attempts (again at once after
-- 'flipped', at most three) lived twice, in `pgops.process_due()` for pg_cron and in Python for the daemon and
-- `refresh now`; it is now `pgops.process_view()`, which both call, each attempt in its own READ COMMITTED
-- transaction under the caller's lock_timeout. Functions only: no lock on the application's tables.
--
-- statement_timeout is not set here: PostgreSQL arms it when a top-level statement starts, never for the
-- statements a procedure runs, so a set_config() inside a CALL limits nothing. The daemon and `refresh now` make
-- each view's CALL its own top-level statement under [refresh] statement_timeout; pg_cron's one CALL runs every
-- due view under the job session's statement_timeout.

-- One view: pgops.refresh_view() in a transaction of its own, once more at once after 'flipped' (the flag's
-- drop must be committed before the wait for writers), at most three times. Commits: CALL it as a top-level
-- statement outside a transaction block (or from a procedure so called). Any isolation level the session has.
CREATE PROCEDURE pgops.process_view(
    p_view_id integer, p_lock_timeout interval, p_force boolean DEFAULT false, p_plain boolean DEFAULT false,
    INOUT outcome text DEFAULT NULL, INOUT concurrent boolean DEFAULT NULL, INOUT duration interval DEFAULT NULL,
    INOUT error text DEFAULT NULL
)
LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..3 LOOP
        COMMIT;  -- a new transaction, so that its isolation level can still be set
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        PERFORM set_config('lock_timeout', (extract(epoch FROM p_lock_timeout) * 1000)::bigint::text, true);
        SELECT r.outcome, r.concurrent, r.duration, r.error INTO outcome, concurrent, duration, error
        FROM pgops.refresh_view(p_view_id, p_force, p_plain) r;
        EXIT WHEN outcome <> 'flipped';
    END LOOP;
    COMMIT;
END
$$;

-- What pg_cron calls (`CALL pgops.process_due(...)` as the job's whole command, so each COMMIT works): every
-- candidate view, views read by others first, through pgops.process_view().
CREATE OR REPLACE PROCEDURE pgops.process_due(p_lock_timeout interval DEFAULT interval '5 seconds')
LANGUAGE plpgsql AS $$
DECLARE
    candidate integer;
    outcome text;  -- process_view's INOUT arguments must be variables; pg_cron keeps no result
    concurrent boolean;
    duration interval;
    error text;
BEGIN
    FOR candidate IN SELECT pgops.refresh_candidates() LOOP
        CALL pgops.process_view(candidate, p_lock_timeout, false, false, outcome, concurrent, duration, error);
    END LOOP;
END
$$;
