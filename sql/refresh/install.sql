-- pgops materialized-view refresh: the queue, the stale marks, the trigger function, registration and
-- processing. Installed by migration 0001 (and printed by `alembic upgrade head --sql`); the daemon calls the
-- same functions, so the rules live here once. Migration 0002 (0002_upgrade.sql) replaces the pending flag and
-- the trigger with a trigger function per view, and the functions that use them.

-- One row per watched view: its settings, its state, and the tables whose writes make it stale.
CREATE TABLE pgops.refresh_views (
    view_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_name name NOT NULL,
    view_name name NOT NULL,
    debounce interval NOT NULL,
    max_wait interval NOT NULL,
    refresh_concurrently boolean NOT NULL,
    base_tables oid[] NOT NULL,         -- tables carrying the pgops_refresh_mark trigger for this view
    write_count bigint,                 -- the base tables' inserted+updated+deleted counters when last seen
    through_views oid[] NOT NULL,       -- materialized views it reads: their refresh makes this one stale
    stale_since timestamptz,            -- oldest folded mark not yet covered by a refresh
    last_marked_at timestamptz,         -- newest folded mark or observed write: debounce counts from here
    last_refresh_started_at timestamptz,
    last_refresh_finished_at timestamptz,
    last_refresh_duration interval,
    last_concurrent_duration interval,  -- to tell when a plain refresh would be cheaper
    last_plain_duration interval,
    refresh_count bigint NOT NULL DEFAULT 0,
    failure_count integer NOT NULL DEFAULT 0,  -- consecutive failures, for the back-off
    next_attempt_at timestamptz,
    last_error text,
    last_error_at timestamptz,
    watched_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schema_name, view_name),
    CHECK (debounce >= interval '0' AND max_wait >= debounce)
);

-- Stale marks: insert-only for writers, no index and no key, so writers never wait on each other or on
-- pgops. The processor deletes (folds) them under the view's advisory lock. Writers add one only while the
-- view is clean: once the processor has folded a mark, it creates the view's pending flag, an empty composite
-- type `pgops.refresh_pending_<id>` that writers look up by name in their own catalog cache (no buffer, no
-- lock, no predicate lock; a sequence's value was measured slower: reading it takes its buffer exclusively),
-- and writers skip the insert until the refresh. Before refreshing, the processor drops the flag, commits,
-- and waits for the transactions that hold a write lock on a base table (the only ones that may have skipped),
-- so the refresh's snapshot includes every write that left no mark.
CREATE TABLE pgops.refresh_marks (
    view_id integer NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every role that writes a watched table runs the trigger, so it may add marks (and do nothing else here).
GRANT USAGE ON SCHEMA pgops TO PUBLIC;
GRANT INSERT ON pgops.refresh_marks TO PUBLIC;

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

-- The relations a materialized view reads, through views and other materialized views: `base` tables get the
-- trigger (with their inheritance children and partitions, whose writes don't fire a parent's statement
-- trigger); `through` materialized views make this view stale when they are refreshed.
CREATE FUNCTION pgops.view_dependencies(p_view regclass, OUT base_tables oid[], OUT through_views oid[])
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE reads(relid) AS (
        SELECT p_view::oid
        UNION
        SELECT d.refobjid
        FROM reads
        JOIN pg_rewrite r ON r.ev_class = reads.relid
        JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                        AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> reads.relid
    ), tables(relid) AS (
        SELECT c.oid FROM reads JOIN pg_class c ON c.oid = reads.relid WHERE c.relkind IN ('r', 'p')
        UNION
        SELECT i.inhrelid FROM tables JOIN pg_inherits i ON i.inhparent = tables.relid
    )
    SELECT
        coalesce((SELECT array_agg(relid ORDER BY relid) FROM tables), '{}'),
        coalesce((SELECT array_agg(r.relid ORDER BY r.relid) FROM reads r JOIN pg_class c ON c.oid = r.relid
                  WHERE c.relkind = 'm' AND r.relid <> p_view::oid), '{}')
$$;

-- A unique index REFRESH ... CONCURRENTLY can use: valid, on plain columns, without a WHERE clause.
CREATE FUNCTION pgops.has_concurrent_key(p_view regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT FROM pg_index i
        WHERE i.indrelid = p_view AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
          AND i.indexprs IS NULL
    )
$$;

-- The name of a view's pending flag, as writers look it up.
CREATE FUNCTION pgops.pending_flag(p_view_id integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'pgops.refresh_pending_' || p_view_id
$$;

-- Raise (a refresh is pending and committed: writers may skip their marks) or lower a view's pending flag.
-- Transactional: it takes effect for writers when the caller commits.
CREATE FUNCTION pgops.set_pending(p_view_id integer, p_pending boolean) RETURNS void
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
CREATE FUNCTION pgops.sync_table_trigger(p_table oid) RETURNS void
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

-- Why the current role may not refresh a materialized view, with the GRANT that fixes it; NULL when it may. The
-- server's own rule, and the one place that tells versions apart for it: before PostgreSQL 17 only the owner (or
-- a member of the owner's role) may refresh; from 17 on, any role with the MAINTAIN privilege on the view, which
-- the owner has, GRANT MAINTAIN gives, and membership in pg_maintain gives on every relation.
CREATE FUNCTION pgops.refresh_refusal(p_view regclass) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_owner name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = p_view);
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        IF has_table_privilege(p_view, 'MAINTAIN') THEN
            RETURN NULL;
        END IF;
        RETURN format('role %I may not refresh %s (owned by role %I): GRANT MAINTAIN ON %s TO %I, or '
                      'GRANT pg_maintain TO %I, or watch it as %I',
                      current_user, p_view, v_owner, p_view, current_user, current_user, v_owner);
    END IF;
    IF pg_has_role(current_user, v_owner, 'USAGE') THEN
        RETURN NULL;
    END IF;
    RETURN format('%s is owned by role %I, and only its owner may refresh it: watch it as %I, or GRANT %I TO %I',
                  p_view, v_owner, v_owner, v_owner, current_user);
END
$$;

-- Register (or re-register with new settings) a materialized view; a user's own migration may call this.
CREATE FUNCTION pgops.watch(
    p_view regclass,
    p_debounce interval DEFAULT interval '30 seconds',
    p_max_wait interval DEFAULT interval '5 minutes',
    p_concurrently boolean DEFAULT true
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_schema name;
    v_name name;
    v_kind "char";
    v_populated boolean;
    v_refusal text;
    deps record;
    old_tables oid[];
    v_id integer;
    t oid;
BEGIN
    SELECT n.nspname, c.relname, c.relkind, c.relispopulated
    INTO v_schema, v_name, v_kind, v_populated
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_view;
    IF v_kind IS DISTINCT FROM 'm' THEN
        RAISE EXCEPTION '% is not a materialized view', p_view USING ERRCODE = 'wrong_object_type';
    END IF;
    v_refusal := pgops.refresh_refusal(p_view);
    IF v_refusal IS NOT NULL THEN
        RAISE EXCEPTION '%', v_refusal USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_concurrently AND NOT pgops.has_concurrent_key(p_view) THEN
        RAISE EXCEPTION '% has no unique index on plain columns without WHERE, so it can''t be refreshed '
            'CONCURRENTLY: create one, or watch it with p_concurrently => false (--no-concurrently)', p_view
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    deps := pgops.view_dependencies(p_view);
    IF cardinality(deps.base_tables) = 0 THEN
        RAISE EXCEPTION '% reads no table, so no write can make it stale', p_view
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    FOR t IN SELECT unnest(deps.base_tables) LOOP
        IF NOT has_table_privilege(t, 'TRIGGER') THEN
            RAISE EXCEPTION 'role % may not create triggers on %: its owner can GRANT TRIGGER ON % TO %',
                current_user, t::regclass, t::regclass, current_user USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;

    SELECT view_id, base_tables INTO v_id, old_tables
    FROM pgops.refresh_views WHERE schema_name = v_schema AND view_name = v_name FOR UPDATE;
    IF v_id IS NULL THEN
        -- stale from the start: writes committed before the trigger existed left no mark
        INSERT INTO pgops.refresh_views (schema_name, view_name, debounce, max_wait, refresh_concurrently,
                                         base_tables, through_views, stale_since, last_marked_at)
        VALUES (v_schema, v_name, p_debounce, p_max_wait, p_concurrently, deps.base_tables, deps.through_views,
                clock_timestamp(), clock_timestamp())
        RETURNING view_id INTO v_id;
        PERFORM pgops.set_pending(v_id, true);  -- commits with the row: writers may skip marks at once
        old_tables := '{}';
    ELSE
        UPDATE pgops.refresh_views
        SET debounce = p_debounce, max_wait = p_max_wait, refresh_concurrently = p_concurrently,
            base_tables = deps.base_tables, through_views = deps.through_views
        WHERE view_id = v_id;
    END IF;
    IF NOT v_populated THEN
        UPDATE pgops.refresh_views SET stale_since = coalesce(stale_since, clock_timestamp()),
                                       last_marked_at = coalesce(last_marked_at, clock_timestamp())
        WHERE view_id = v_id;
    END IF;
    FOR t IN SELECT DISTINCT unnest(old_tables || deps.base_tables) LOOP
        PERFORM pgops.sync_table_trigger(t);
    END LOOP;
    RETURN v_id;
END
$$;

-- Stop watching: remove the view's row, its marks, and its id from the triggers (dropping unused triggers).
-- Takes the name as text so a view that was dropped can still be unwatched.
CREATE FUNCTION pgops.unwatch(p_view text) RETURNS boolean
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

-- The one decision rule: refresh once the view has been stale for `debounce` with no newer mark, or for
-- `max_wait` regardless (so continuous writes can't starve it), and not before a failed refresh's back-off ends.
CREATE FUNCTION pgops.refresh_is_due(
    p_stale_since timestamptz, p_last_marked_at timestamptz, p_debounce interval, p_max_wait interval,
    p_next_attempt_at timestamptz, p_now timestamptz
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_stale_since IS NOT NULL
       AND (p_next_attempt_at IS NULL OR p_now >= p_next_attempt_at)
       AND (p_now - coalesce(p_last_marked_at, p_stale_since) >= p_debounce OR p_now - p_stale_since >= p_max_wait)
$$;

-- Back-off after the n-th consecutive failure: debounce (at least 1s) doubling, capped at max_wait and 1 hour.
CREATE FUNCTION pgops.refresh_backoff(p_failures integer, p_debounce interval, p_max_wait interval)
RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(greatest(p_debounce, interval '1 second') * 2 ^ least(greatest(p_failures - 1, 0), 20),
                 greatest(p_max_wait, interval '1 second'), interval '1 hour')
$$;

-- Writes to the base tables seen by the statistics system (inserted + updated + deleted, all committed or
-- not): how the processor learns of writes while the stale flag lets writers skip their marks, so debounce
-- still counts from the last write (up to the statistics' reporting delay, about a second).
CREATE FUNCTION pgops.write_count(p_tables oid[]) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(pg_stat_get_tuples_inserted(t) + pg_stat_get_tuples_updated(t)
                        + pg_stat_get_tuples_deleted(t)), 0)::bigint
    FROM unnest(p_tables) AS t
$$;

-- Wait until every transaction that holds a write lock on one of the tables now has ended: with the view's
-- pending flag already dropped and committed, those are the only ones that may have skipped their mark, and
-- afterwards a new snapshot sees all of their writes. False when they did not end within p_wait.
CREATE FUNCTION pgops.wait_for_writers(p_tables oid[], p_wait interval) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    write_modes text[] := '{RowExclusiveLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}';
    writers text[];
    deadline timestamptz := clock_timestamp() + p_wait;
BEGIN
    LOOP
        writers := ARRAY(
            SELECT DISTINCT l.virtualtransaction FROM pg_locks l
            WHERE l.locktype = 'relation' AND l.relation = ANY (p_tables) AND l.granted AND l.mode = ANY (write_modes)
              AND l.pid IS DISTINCT FROM pg_backend_pid()
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND (writers IS NULL OR l.virtualtransaction = ANY (writers)));
        IF cardinality(writers) = 0 THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
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
CREATE FUNCTION pgops.refresh_view(
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

-- Views worth a look, in dependency order (a view after the watched views it reads): stale ones and ones with
-- new marks.
CREATE FUNCTION pgops.refresh_candidates() RETURNS SETOF integer
LANGUAGE sql STABLE AS $$
    SELECT v.view_id
    FROM pgops.refresh_views v
    WHERE v.stale_since IS NOT NULL OR v.view_id IN (SELECT m.view_id FROM pgops.refresh_marks m)
    ORDER BY (SELECT count(*) FROM pgops.refresh_views w
              WHERE to_regclass(format('%I.%I', w.schema_name, w.view_name))::oid = ANY (v.through_views)),
             v.view_id
$$;

-- What pg_cron calls (`CALL pgops.process_due()` as the whole command, so each COMMIT works): every
-- candidate view in its own transaction, with a lock_timeout for its locks.
CREATE PROCEDURE pgops.process_due(p_lock_timeout interval DEFAULT interval '5 seconds')
LANGUAGE plpgsql AS $$
DECLARE
    candidate integer;
    result text;
BEGIN
    FOR candidate IN SELECT pgops.refresh_candidates() LOOP
        FOR attempt IN 1..3 LOOP  -- again at once after 'flipped', now that the flag's drop is committed
            PERFORM set_config('lock_timeout', (extract(epoch FROM p_lock_timeout) * 1000)::bigint::text, true);
            SELECT r.outcome INTO result FROM pgops.refresh_view(candidate) r;
            COMMIT;
            EXIT WHEN result <> 'flipped';
        END LOOP;
    END LOOP;
END
$$;
