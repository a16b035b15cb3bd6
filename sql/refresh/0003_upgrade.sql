-- pgops refresh, migration 0003: while a view's refresh is pending, the processor also DISABLEs the view's
-- triggers on the tables whose owner it may act for, so that writers there call no trigger function at all (the
-- executor skips a disabled trigger in its loop); 0002's empty trigger body was still a PL/pgSQL call per
-- statement.
--
-- ALTER TABLE ... ENABLE/DISABLE TRIGGER takes SHARE ROW EXCLUSIVE on the table, which waits for every
-- transaction holding a write lock on it and is granted before any later one. So once the processor's ENABLE
-- commits, every writer that skipped its mark because the trigger was disabled has ended, and every later one
-- locked its table after the commit and sees the trigger again (a backend takes in catalog changes when it
-- locks a relation). The processor tries the lock with a short lock_timeout per attempt, again and again up to
-- its wait limit, so that writers never queue behind it for longer than one attempt.
--
-- The pending body of 0002 stays the view's flag: the triggers are disabled only on top of it, and only where
-- the role may (ALTER TABLE needs the table's owner; CREATE TRIGGER, which `watch` needs, only the TRIGGER
-- privilege). A table whose trigger stays enabled falls back to 0002's empty body and 0002's wait for writers,
-- which the processor still runs after lowering the flag.

-- The pending flag is up while the trigger function has the empty body, or while any of the view's triggers is
-- disabled (both lowered together).
CREATE OR REPLACE FUNCTION pgops.is_pending(p_view_id integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT p.prosrc = pgops.mark_body(p_view_id, true) FROM pg_proc p
                     WHERE p.oid = to_regprocedure(pgops.mark_function(p_view_id) || '()')), false)
        OR EXISTS (SELECT FROM pg_trigger t
                   WHERE t.tgfoid = to_regprocedure(pgops.mark_function(p_view_id) || '()') AND t.tgenabled = 'D')
$$;

-- Enable (p_enabled) or disable the view's pgops triggers that are not so already, as one set: each attempt
-- takes the tables' SHARE ROW EXCLUSIVE locks under a 50 ms lock_timeout and is rolled back whole when one is
-- not granted (so writers of a table already locked don't stay queued behind the next one), and attempts go on
-- until p_wait has passed. Disabling skips the tables whose owner this role may not act for; enabling can't.
-- NULL when done, else why not (the caller's transaction is untouched then).
CREATE FUNCTION pgops.switch_mark_triggers(p_view_id integer, p_enabled boolean, p_wait interval) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    fn regprocedure := to_regprocedure(pgops.mark_function(p_view_id) || '()');
    tables regclass[];
    refused text;
    saved text := current_setting('lock_timeout');
    deadline timestamptz := clock_timestamp() + p_wait;
    t regclass;
    verb text := CASE WHEN p_enabled THEN 'ENABLE' ELSE 'DISABLE' END;
BEGIN
    SELECT array_agg(tg.tgrelid::regclass ORDER BY tg.tgrelid) FILTER (WHERE pg_has_role(c.relowner, 'USAGE')),
           min(tg.tgrelid::regclass::text) FILTER (WHERE NOT pg_has_role(c.relowner, 'USAGE'))
    INTO tables, refused
    FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
    WHERE tg.tgfoid = fn AND (tg.tgenabled = 'D') = p_enabled;
    IF p_enabled AND refused IS NOT NULL THEN
        RETURN format('role %I may not enable the pgops trigger on %s that a refresh of view %s needs enabled '
                      '(ALTER TABLE: only the table''s owner may)', current_user, refused, p_view_id);
    END IF;
    IF tables IS NULL THEN
        RETURN NULL;
    END IF;
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            FOREACH t IN ARRAY tables LOOP
                EXECUTE format('ALTER TABLE ONLY %s %s TRIGGER %I', t, verb, 'pgops_refresh_mark_' || p_view_id);
            END LOOP;
            PERFORM set_config('lock_timeout', saved, true);
            RETURN NULL;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- rolled back: locks released, lock_timeout restored
        END;
        IF clock_timestamp() >= deadline THEN
            RETURN format('writers of %s did not finish within %s', array_to_string(tables, ', '), p_wait);
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;

-- As in 0002, with the triggers switched: disabled (a short try: else the empty body does) when a refresh is
-- pending and not due, enabled again before the flag counts as lowered.
CREATE OR REPLACE FUNCTION pgops.refresh_view(
    p_view_id integer, p_force boolean DEFAULT false, p_plain boolean DEFAULT false,
    OUT outcome text, OUT concurrent boolean, OUT duration interval, OUT error text
)
LANGUAGE plpgsql AS $$
DECLARE
    q pgops.refresh_views;
    first_mark timestamptz;
    last_mark timestamptz;
    writes bigint;
    rel regclass;
    populated boolean;
    started timestamptz;
    wait_limit interval := coalesce(nullif(current_setting('lock_timeout'), '0')::interval, interval '5 seconds');
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'pgops refreshes views in READ COMMITTED transactions, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('pgops.refresh'), p_view_id) THEN
        outcome := 'busy';
        RETURN;
    END IF;
    WITH folded AS (DELETE FROM pgops.refresh_marks WHERE view_id = p_view_id RETURNING marked_at)
    SELECT min(marked_at), max(marked_at) INTO first_mark, last_mark FROM folded;
    SELECT pgops.write_count(v.base_tables) INTO writes FROM pgops.refresh_views v WHERE v.view_id = p_view_id;
    UPDATE pgops.refresh_views
    SET stale_since = least(stale_since, first_mark),
        last_marked_at = greatest(last_marked_at, last_mark,
                                  CASE WHEN coalesce(stale_since, first_mark) IS NOT NULL
                                        AND writes IS DISTINCT FROM write_count THEN clock_timestamp() END),
        write_count = writes
    WHERE view_id = p_view_id
    RETURNING * INTO q;
    IF q.view_id IS NULL THEN
        outcome := 'unknown';
        RETURN;
    END IF;
    IF NOT p_force AND q.stale_since IS NULL THEN
        outcome := 'clean';
        RETURN;
    END IF;
    IF NOT p_force AND NOT pgops.refresh_is_due(q.stale_since, q.last_marked_at, q.debounce, q.max_wait,
                                                q.next_attempt_at, clock_timestamp()) THEN
        -- a refresh is pending, committed with the flag: writers may stop marking until it runs; where the
        -- triggers can't be disabled now (writers hold the table longer than a short try), the empty body does
        -- and the next run tries again
        PERFORM pgops.set_pending(p_view_id, true);
        PERFORM pgops.switch_mark_triggers(p_view_id, false, interval '100 milliseconds');
        outcome := 'waiting';
        RETURN;
    END IF;
    IF pgops.is_pending(p_view_id) THEN
        error := pgops.switch_mark_triggers(p_view_id, true, wait_limit);
        IF error IS NOT NULL THEN
            outcome := 'busy';  -- still pending, nothing lost: the next run tries again
            RETURN;
        END IF;
        PERFORM pgops.set_pending(p_view_id, false);
        outcome := 'flipped';
        RETURN;
    END IF;
    IF NOT pgops.wait_for_writers(q.base_tables, wait_limit) THEN
        IF q.stale_since IS NOT NULL THEN
            PERFORM pgops.set_pending(p_view_id, true);  -- still pending: writers may skip again
        END IF;
        outcome := 'busy';
        error := format('writers of %s.%s did not finish within %s', q.schema_name, q.view_name, wait_limit);
        RETURN;
    END IF;

    rel := to_regclass(format('%I.%I', q.schema_name, q.view_name));
    SELECT c.relispopulated INTO populated FROM pg_class c WHERE c.oid = rel;
    -- a never-populated view gets a plain first refresh; p_plain measures what a plain refresh costs
    concurrent := q.refresh_concurrently AND populated AND NOT p_plain;
    started := clock_timestamp();
    BEGIN
        IF rel IS NULL THEN
            RAISE EXCEPTION 'materialized view %.% no longer exists', q.schema_name, q.view_name;
        END IF;
        IF concurrent THEN
            EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.%I', q.schema_name, q.view_name);
        ELSE
            EXECUTE format('REFRESH MATERIALIZED VIEW %I.%I', q.schema_name, q.view_name);
        END IF;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS error = MESSAGE_TEXT;
        outcome := 'failed';
        duration := clock_timestamp() - started;
        UPDATE pgops.refresh_views
        SET failure_count = failure_count + 1,
            next_attempt_at = clock_timestamp() + pgops.refresh_backoff(failure_count + 1, debounce, max_wait),
            last_error = error, last_error_at = clock_timestamp(), last_refresh_started_at = started
        WHERE view_id = p_view_id;
        RETURN;
    END;
    duration := clock_timestamp() - started;
    outcome := 'refreshed';
    UPDATE pgops.refresh_views
    SET stale_since = NULL, last_refresh_started_at = started, last_refresh_finished_at = clock_timestamp(),
        last_refresh_duration = duration,
        last_concurrent_duration = CASE WHEN concurrent THEN duration ELSE last_concurrent_duration END,
        last_plain_duration = CASE WHEN concurrent THEN last_plain_duration ELSE duration END,
        refresh_count = refresh_count + 1, failure_count = 0, next_attempt_at = NULL, last_error = NULL
    WHERE view_id = p_view_id;
    -- views that read this one are stale now
    INSERT INTO pgops.refresh_marks (view_id)
    SELECT v.view_id FROM pgops.refresh_views v WHERE rel::oid = ANY (v.through_views);
END
$$;
