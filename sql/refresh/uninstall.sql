-- Remove everything migration 0001 installed, the pgops triggers on user tables first (`DROP FUNCTION` would
-- refuse while they exist, and CASCADE would hide what it removed).
DO $$
DECLARE
    relation regclass;
BEGIN
    FOR relation IN
        SELECT tgrelid::regclass FROM pg_trigger WHERE tgfoid = 'pgops.mark_stale()'::regprocedure
    LOOP
        EXECUTE format('DROP TRIGGER pgops_refresh_mark ON %s', relation);
    END LOOP;
    PERFORM pgops.set_pending(view_id, false) FROM pgops.refresh_views;
END
$$;
DROP PROCEDURE pgops.process_due(interval);
DROP FUNCTION pgops.refresh_candidates();
DROP FUNCTION pgops.refresh_view(integer, boolean, boolean);
DROP FUNCTION pgops.wait_for_writers(oid[], interval);
DROP FUNCTION pgops.write_count(oid[]);
DROP FUNCTION pgops.refresh_backoff(integer, interval, interval);
DROP FUNCTION pgops.refresh_is_due(timestamptz, timestamptz, interval, interval, timestamptz, timestamptz);
DROP FUNCTION pgops.unwatch(text);
DROP FUNCTION pgops.watch(regclass, interval, interval, boolean);
DROP FUNCTION pgops.refresh_refusal(regclass);
DROP FUNCTION pgops.sync_table_trigger(oid);
DROP FUNCTION pgops.set_pending(integer, boolean);
DROP FUNCTION pgops.pending_flag(integer);
DROP FUNCTION pgops.has_concurrent_key(regclass);
DROP FUNCTION pgops.view_dependencies(regclass);
DROP FUNCTION pgops.mark_stale();
DROP FUNCTION pgops.add_marks(text[]);
DROP TABLE pgops.refresh_marks;
DROP TABLE pgops.refresh_views;
REVOKE USAGE ON SCHEMA pgops FROM PUBLIC;
