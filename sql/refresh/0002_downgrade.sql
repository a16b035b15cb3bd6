-- Undo migration 0002: back to 0001's write path (a composite type as each view's pending flag, one trigger per
-- table calling pgops.mark_stale()), each view's flag in the state its trigger function had.

-- Under the views' advisory locks (no processor flips a flag meanwhile): the flags as types, the per-view
-- triggers and trigger functions gone. 0001's triggers come back below, once its functions do.
DO $$
DECLARE
    v_id integer;
    rel regclass;
    trigger_name name;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgops.refresh'), view_id) FROM pgops.refresh_views ORDER BY view_id;
    FOR rel, trigger_name IN
        SELECT t.tgrelid::regclass, t.tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE p.pronamespace = 'pgops'::regnamespace
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, rel);
    END LOOP;
    FOR v_id IN SELECT view_id FROM pgops.refresh_views WHERE pgops.is_pending(view_id) ORDER BY view_id LOOP
        EXECUTE format('CREATE TYPE pgops.%I AS ()', 'refresh_pending_' || v_id);
    END LOOP;
    FOR v_id IN SELECT substr(p.proname, length('refresh_mark_') + 1)::integer FROM pg_proc p
                WHERE p.pronamespace = 'pgops'::regnamespace AND p.proname ~ '^refresh_mark_[0-9]+$' LOOP
        EXECUTE format('DROP FUNCTION %s()', pgops.mark_function(v_id));
    END LOOP;
END
$$;
DROP FUNCTION pgops.is_pending(integer);
DROP FUNCTION pgops.mark_body(integer, boolean);
DROP FUNCTION pgops.mark_function(integer);

-- 0001's definitions, as sql/refresh/install.sql has them.
-- The name of a view's pending flag, as writers look it up.
CREATE FUNCTION pgops.pending_flag(p_view_id integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'pgops.refresh_pending_' || p_view_id
$$;

-- Statement trigger on the base tables (BEFORE: no after-trigger queue). TG_ARGV holds pairs (view id, pending
-- flag's name), so the trigger reads no table (no rw-conflict for SERIALIZABLE writers). When the flag says a
-- refresh is pending, there is nothing to write; otherwise at most one mark per view per transaction: a
-- transaction-local setting remembers it (and is rolled back with a rolled-back savepoint, like the mark). The
-- write lock the statement holds on the table until commit is what the processor waits for. A missing flag
-- reads as clean (mark), so a writer never fails because of pgops.
CREATE FUNCTION pgops.mark_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- One expression on the common path (one view, its refresh pending): PL/pgSQL sets each expression up
    -- again in every transaction, which was measured to cost more than the lookup itself.
    IF TG_NARGS > 2 OR to_regclass(TG_ARGV[1]) IS NULL THEN
        PERFORM pgops.add_marks(TG_ARGV);
    END IF;
    RETURN NULL;
END
$$;

-- The trigger's slower path: a mark for each view of the pairs that is clean and not yet marked in this
-- transaction.
CREATE FUNCTION pgops.add_marks(p_pairs text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN array_lower(p_pairs, 1) .. array_upper(p_pairs, 1) - 1 BY 2 LOOP
        IF to_regclass(p_pairs[i + 1]) IS NULL
           AND current_setting('pgops.m_' || p_pairs[i], true) IS DISTINCT FROM 'y' THEN
            PERFORM set_config('pgops.m_' || p_pairs[i], 'y', true);
            INSERT INTO pgops.refresh_marks (view_id) VALUES (p_pairs[i]::integer);
        END IF;
    END LOOP;
END
$$;

-- Raise (a refresh is pending and committed: writers may skip their marks) or lower a view's pending flag.
-- Transactional: it takes effect for writers when the caller commits.
CREATE OR REPLACE FUNCTION pgops.set_pending(p_view_id integer, p_pending boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_pending AND to_regclass(pgops.pending_flag(p_view_id)) IS NULL THEN
        EXECUTE format('CREATE TYPE %s AS ()', pgops.pending_flag(p_view_id));
    ELSIF NOT p_pending AND to_regclass(pgops.pending_flag(p_view_id)) IS NOT NULL THEN
        EXECUTE format('DROP TYPE %s', pgops.pending_flag(p_view_id));
    END IF;
END
$$;

-- (Re)create the one pgops trigger of a table with the ids of every view that reads it, or drop it.
CREATE OR REPLACE FUNCTION pgops.sync_table_trigger(p_table oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    qualified text;
    ids text;
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table;
    IF qualified IS NULL THEN
        RETURN;  -- the table was dropped, and its trigger with it
    END IF;
    SELECT string_agg(quote_literal(view_id::text) || ', ' || quote_literal(pgops.pending_flag(view_id)), ', '
                      ORDER BY view_id) INTO ids
    FROM pgops.refresh_views WHERE p_table = ANY (base_tables);
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = p_table AND tgname = 'pgops_refresh_mark') THEN
        EXECUTE format('DROP TRIGGER pgops_refresh_mark ON %s', qualified);
    END IF;
    IF ids IS NOT NULL THEN
        EXECUTE format('CREATE TRIGGER pgops_refresh_mark BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION pgops.mark_stale(%s)', qualified, ids);
    END IF;
END
$$;

-- Stop watching: remove the view's row, its marks, and its id from the triggers (dropping unused triggers).
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
    PERFORM pgops.set_pending(v_id, false);
    RETURN true;
END
$$;

-- Process one view in the caller's transaction (READ COMMITTED, one view per transaction): take the view's
-- advisory lock (at most one refresh of a view at a time anywhere), fold the marks visible now into the queue
-- row, and refresh if due (or p_force). When due while the pending flag is up, drop it and return 'flipped':
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
    IF to_regclass(pgops.pending_flag(p_view_id)) IS NOT NULL THEN
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

DO $$
DECLARE
    t oid;
BEGIN
    FOR t IN SELECT DISTINCT unnest(base_tables) FROM pgops.refresh_views LOOP
        PERFORM pgops.sync_table_trigger(t);
    END LOOP;
END
$$;
