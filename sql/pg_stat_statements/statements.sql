-- A part, not a statement: the current database's statements in pg_stat_statements, pgops' own left out, for
-- the queries that read the workload (sql/advisor/pg_stat_statements.sql, sql/workload/statements.sql) to put in
-- a WITH. {schema} is the extension's schema; {total_time} is total_exec_time on PostgreSQL 13 and newer,
-- total_time before; %(user)s (NULL for every role) keeps one role's statements.
-- pgops' own statements are not the workload: its EXPLAINs, its prepared statements, its transactions and
-- settings, its hypopg calls (and the catalog query hypopg runs for its OIDs) and the statements of its own SQL
-- files (marked /* pgops */), and the statements of its own functions and procedures (which name its schema,
-- recorded where pg_stat_statements.track = all) are left out by their shape; the advisor also turns tracking
-- off where the role may, so they are not recorded in the first place.
SELECT s.queryid, s.query, s.calls, s.{total_time} AS total_time, s.rows, s.shared_blks_hit, s.shared_blks_read
FROM {schema}.pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (%(user)s::text IS NULL OR s.userid = (SELECT oid FROM pg_roles WHERE rolname = %(user)s::text))
  AND s.query !~* '^\s*(explain|begin|start\s+transaction|commit|rollback|set|reset|show|deallocate)\M'
  AND s.query !~* '^\s*(prepare|execute)\s+"?pgops_'
  AND s.query !~ '^/\* pgops \*/'
  AND s.query !~* '\mhypopg_\w*\s*\('
  AND s.query !~* '(^|[^a-z0-9_$"])"?pgops"?\.'
  AND s.query <> 'SELECT max(oid) FROM pg_catalog.pg_class WHERE oid < $1'
