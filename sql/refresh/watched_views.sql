-- Every watched view with its queue state; marks not folded yet count too, so a view is stale as soon as a
-- write commits. Times are the server's (`now` is its clock), so no client clock skew enters the figures.
WITH pending AS (
    SELECT view_id, min(marked_at) AS first_mark, max(marked_at) AS last_mark
    FROM pgops.refresh_marks
    GROUP BY view_id
)
SELECT
    v.view_id,
    v.schema_name,
    v.view_name,
    v.debounce,
    v.max_wait,
    v.refresh_concurrently,
    least(v.stale_since, p.first_mark) AS stale_since,
    greatest(v.last_marked_at, p.last_mark) AS last_marked_at,
    v.last_refresh_started_at,
    v.last_refresh_finished_at,
    v.last_refresh_duration,
    v.last_concurrent_duration,
    v.last_plain_duration,
    v.refresh_count,
    v.failure_count,
    v.next_attempt_at,
    v.last_error,
    v.last_error_at,
    coalesce((SELECT array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY n.nspname, c.relname)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = ANY (v.base_tables)), '{}') AS base_tables,
    m.relispopulated AS populated,
    clock_timestamp() AS now
FROM pgops.refresh_views v
LEFT JOIN pending p ON p.view_id = v.view_id
LEFT JOIN pg_class m ON m.oid = to_regclass(format('%I.%I', v.schema_name, v.view_name))
ORDER BY v.schema_name, v.view_name
