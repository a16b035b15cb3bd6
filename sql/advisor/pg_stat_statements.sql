-- The workload of the current database from pg_stat_statements, heaviest first, with how many statements the
-- filters leave out (on every row; a single row of NULL statement columns when none is kept). {schema} is the
-- extension's schema; {total_time} is total_exec_time on PostgreSQL 13 and newer, total_time before.
-- pgops' own statements are not the workload: its EXPLAINs, its prepared statements, its transactions and
-- settings, its hypopg calls (and the catalog query hypopg runs for its OIDs) and the statements of its own SQL
-- files (marked /* pgops */) are left out by their shape; the advisor also turns tracking off where the role
-- may, so they are not recorded in the first place.
WITH workload AS (
    SELECT s.queryid, s.query, s.calls, s.{total_time} AS total_time, s.rows, s.shared_blks_hit, s.shared_blks_read
    FROM {schema}.pg_stat_statements s
    WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND (%(user)s::text IS NULL OR s.userid = (SELECT oid FROM pg_roles WHERE rolname = %(user)s::text))
      AND s.query !~* '^\s*(explain|begin|start\s+transaction|commit|rollback|set|reset|show|deallocate)\M'
      AND s.query !~* '^\s*(prepare|execute)\s+"?pgops_'
      AND s.query !~ '^/\* pgops \*/'
      AND s.query !~* '\mhypopg_\w*\s*\('
      AND s.query <> 'SELECT max(oid) FROM pg_catalog.pg_class WHERE oid < $1'
), counts AS (
    SELECT count(*) FILTER (WHERE calls < %(min_calls)s) AS rare,
           count(*) FILTER (WHERE calls >= %(min_calls)s AND total_time < %(min_total_time)s) AS light,
           greatest(count(*) FILTER (WHERE calls >= %(min_calls)s AND total_time >= %(min_total_time)s)
                    - %(top)s, 0) AS past_top
    FROM workload
), kept AS (
    SELECT * FROM workload
    WHERE calls >= %(min_calls)s AND total_time >= %(min_total_time)s
    ORDER BY total_time DESC
    LIMIT %(top)s
)
SELECT counts.rare, counts.light, counts.past_top,
       kept.queryid, kept.query, kept.calls, kept.total_time, kept.rows, kept.shared_blks_hit, kept.shared_blks_read
FROM counts LEFT JOIN kept ON true
ORDER BY kept.total_time DESC NULLS LAST
