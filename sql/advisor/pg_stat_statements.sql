-- The workload of the current database from pg_stat_statements, heaviest first. {schema} is the extension's
-- schema; {total_time} is total_exec_time on PostgreSQL 13 and newer, total_time before.
SELECT s.queryid, s.query, s.calls, s.{total_time} AS total_time, s.rows, s.shared_blks_hit, s.shared_blks_read
FROM {schema}.pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.calls >= %(min_calls)s
  AND s.{total_time} >= %(min_total_time)s
  AND (%(user)s::text IS NULL OR s.userid = (SELECT oid FROM pg_roles WHERE rolname = %(user)s::text))
ORDER BY s.{total_time} DESC
LIMIT %(top)s
