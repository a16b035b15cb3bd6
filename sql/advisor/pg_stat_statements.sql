-- The workload of the current database from pg_stat_statements, heaviest first. {schema} is the extension's
-- schema; {total_time} is total_exec_time on PostgreSQL 13 and newer, total_time before.
-- pgops' own statements are not the workload: its EXPLAINs, its prepared statements, its transactions and
-- settings, and its hypopg calls are left out by their shape (the advisor also turns tracking off where the
-- role may, so they are not recorded in the first place).
SELECT s.queryid, s.query, s.calls, s.{total_time} AS total_time, s.rows, s.shared_blks_hit, s.shared_blks_read
FROM {schema}.pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.calls >= %(min_calls)s
  AND s.{total_time} >= %(min_total_time)s
  AND (%(user)s::text IS NULL OR s.userid = (SELECT oid FROM pg_roles WHERE rolname = %(user)s::text))
  AND s.query !~* '^\s*(explain|begin|start\s+transaction|commit|rollback|set|reset|show|deallocate)\M'
  AND s.query !~* '^\s*(prepare|execute)\s+"?pgops_'
  AND s.query !~ '^/\* pgops \*/'
  AND s.query !~* '\mhypopg_\w*\s*\('
  AND s.query <> 'SELECT max(oid) FROM pg_catalog.pg_class WHERE oid < $1'  -- hypopg's own, for its OIDs
ORDER BY s.{total_time} DESC
LIMIT %(top)s
