-- pgops refresh, migration 0002: a view's pending flag is the body of its own trigger function, so that while a
-- refresh is pending a writer runs an empty PL/pgSQL trigger and looks nothing up (0001's trigger looked its
-- flag's name up in every statement, which cost writers more than the trigger call itself).
--
-- Each watched view has a trigger function `pgops.refresh_mark_<id>()`, called by a statement trigger
-- `pgops_refresh_mark_<id>` on each of its base tables. Pending: the body does nothing. Clean: it adds at most
-- one mark per transaction. The processor swaps the body with CREATE OR REPLACE FUNCTION, which takes no lock a
-- writer waits for. Writers see a swap as they saw 0001's flag: PL/pgSQL checks the function's catalog row at
-- every call, and a backend takes in catalog changes when it locks the table it writes; so a writer that locked
-- its table after the swap committed runs the new body, and one that locked it before is one the processor
-- waits for. The rest of 0001's design (marks, folding, the wait for writers) is unchanged.

-- The name of a view's trigger function.
CREATE FUNCTION pgops.mark_function(p_view_id integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'pgops.refresh_mark_' || p_view_id
$$;

-- The body of a view's trigger function, pending or clean. The transaction-local setting keeps it to one mark
-- per transaction and is rolled back with a rolled-back savepoint, like the mark. Names are schema-qualified so
-- a writer's search_path can't change what runs.
CREATE FUNCTION pgops.mark_body(p_view_id integer, p_pending boolean) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_pending THEN E'\nBEGIN\n    RETURN NULL;\nEND\n' ELSE format($body$
BEGIN
    IF pg_catalog.current_setting('pgops.m_%1$s', true) IS DISTINCT FROM 'y' THEN
        PERFORM pg_catalog.set_config('pgops.m_%1$s', 'y', true);
        INSERT INTO pgops.refresh_marks (view_id) VALUES (%1$s);
    END IF;
    RETURN NULL;
END
$body$, p_view_id) END
$$;

-- Whether the view's pending flag is up: its trigger function has the pending body.
CREATE FUNCTION pgops.is_pending(p_view_id integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT p.prosrc = pgops.mark_body(p_view_id, true) FROM pg_proc p
                     WHERE p.oid = to_regprocedure(pgops.mark_function(p_view_id) || '()')), false)
$$;

-- Raise (a refresh is pending and committed: writers may skip their marks) or lower a view's pending flag: give
-- its trigger function that body, creating the function if needed. Transactional: it takes effect for writers
-- when the caller commits. A body already right is left alone, so backends don't recompile it for nothing.
CREATE OR REPLACE FUNCTION pgops.set_pending(p_view_id integer, p_pending boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT p.prosrc FROM pg_proc p WHERE p.oid = to_regprocedure(pgops.mark_function(p_view_id) || '()'))
       IS DISTINCT FROM pgops.mark_body(p_view_id, p_pending) THEN
        EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',
                       pgops.mark_function(p_view_id), pgops.mark_body(p_view_id, p_pending));
    END IF;
END
$$;

-- (Re)create a table's pgops triggers, one per view that reads it, calling that view's trigger function; drop
-- those of views that no longer read it (pgops' triggers are the ones whose function lives in schema pgops).
CREATE OR REPLACE FUNCTION pgops.sync_table_trigger(p_table oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    qualified text;
    trigger_name name;
    v_id integer;
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table;
    IF qualified IS NULL THEN
        RETURN;  -- the table was dropped, and its triggers with it
    END IF;
    FOR trigger_name IN
        SELECT t.tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE t.tgrelid = p_table AND p.pronamespace = 'pgops'::regnamespace
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, qualified);
    END LOOP;
    FOR v_id IN SELECT view_id FROM pgops.refresh_views WHERE p_table = ANY (base_tables) ORDER BY view_id LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                       'pgops_refresh_mark_' || v_id, qualified, pgops.mark_function(v_id));
    END LOOP;
END
$$;

-- Stop watching: remove the view's row, its marks, its triggers and its trigger function.
-- Takes the name as text so a view that was dropped can still be unwatched.
CREATE OR REPLACE FUNCTION pgops.unwatch(p_view text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    parts text[] := parse_ident(p_view);
    v_schema name;
    v_name name;
    v_id integer;
    old_tables oid[];
    t oid;
BEGIN
    IF cardinality(parts) = 1 THEN
        v_name := parts[1];
        SELECT schema_name INTO v_schema FROM pgops.refresh_views
        WHERE view_name = v_name ORDER BY array_position(current_schemas(false), schema_name) NULLS LAST LIMIT 1;
    ELSE
        v_schema := parts[1];
        v_name := parts[2];
    END IF;
    DELETE FROM pgops.refresh_views WHERE schema_name = v_schema AND view_name = v_name
    RETURNING view_id, base_tables INTO v_id, old_tables;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    DELETE FROM pgops.refresh_marks WHERE view_id = v_id;
    FOR t IN SELECT unnest(old_tables) LOOP
        PERFORM pgops.sync_table_trigger(t);
    END LOOP;
    EXECUTE format('DROP FUNCTION IF EXISTS %s()', pgops.mark_function(v_id));
    RETURN true;
END
$$;

-- Process one view in the caller's transaction (READ COMMITTED, one view per transaction): take the view's
-- advisory lock (at most one refresh of a view at a time anywhere), fold the marks visible now into the queue
-- row, and refresh if due (or p_force). When due while the pending flag is up, lower it and return 'flipped':
-- the caller commits and calls again at once, so the flag is down for every writer before the wait. The
-- REFRESH reads a later snapshot than the fold, so a write committed after the fold left a mark that the next
-- run sees, and a write that skipped its mark was waited for: no lost refresh. A failed refresh is rolled back
-- to a savepoint, recorded and backed off; the stale state is kept. p_plain: a plain refresh even when the view
-- is refreshed concurrently, to compare their durations.
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

-- Convert a 0001 install: each view's flag (a composite type) becomes its trigger function's body, in the same
-- state, and each table gets the per-view triggers. Holding the views' advisory locks keeps every processor from
-- flipping a flag meanwhile (they skip the view as busy).
DO $$
DECLARE
    v_id integer;
    t oid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgops.refresh'), view_id) FROM pgops.refresh_views ORDER BY view_id;
    FOR v_id IN SELECT view_id FROM pgops.refresh_views ORDER BY view_id LOOP
        PERFORM pgops.set_pending(v_id, to_regclass('pgops.refresh_pending_' || v_id) IS NOT NULL);
        EXECUTE format('DROP TYPE IF EXISTS pgops.%I', 'refresh_pending_' || v_id);
    END LOOP;
    FOR t IN SELECT DISTINCT unnest(base_tables) FROM pgops.refresh_views LOOP
        PERFORM pgops.sync_table_trigger(t);
    END LOOP;
END
$$;
DROP FUNCTION pgops.mark_stale();
DROP FUNCTION pgops.add_marks(text[]);
DROP FUNCTION pgops.pending_flag(integer);
