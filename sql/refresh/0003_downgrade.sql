-- Undo migration 0003: every pgops trigger enabled again (a disabled one would stay so under 0002, whose
-- processor only swaps the trigger function's body: writers would skip their marks for good), then 0002's
-- functions. A view that was pending keeps its empty body, so it stays pending under 0002.
DO $$
DECLARE
    v_id integer;
    refusal text;
    wait_limit interval := coalesce(nullif(current_setting('lock_timeout'), '0')::interval, interval '5 seconds');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgops.refresh'), view_id) FROM pgops.refresh_views ORDER BY view_id;
    FOR v_id IN SELECT view_id FROM pgops.refresh_views ORDER BY view_id LOOP
        refusal := pgops.switch_mark_triggers(v_id, true, wait_limit);
        IF refusal IS NOT NULL THEN
            RAISE EXCEPTION 'pgops can''t downgrade from 0003: %', refusal;
        END IF;
    END LOOP;
END
$$;
DROP FUNCTION pgops.switch_mark_triggers(integer, boolean, interval);

-- 0002's definitions, as sql/refresh/0002_upgrade.sql has them.
CREATE OR REPLACE FUNCTION pgops.is_pending(p_view_id integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT p.prosrc = pgops.mark_body(p_view_id, true) FROM pg_proc p
                     WHERE p.oid = to_regprocedure(pgops.mark_function(p_view_id) || '()')), false)
$$;

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
        -- a refresh is pending, committed with the flag: writers may stop marking until it runs
        PERFORM pgops.set_pending(p_view_id, true);
        outcome := 'waiting';
        RETURN;
    END IF;
    IF pgops.is_pending(p_view_id) THEN
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
