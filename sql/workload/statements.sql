-- Every statement of the current database in pg_stat_statements (pgops' own left out), heaviest total time first:
-- one snapshot, so the shares of the total add up. The statements: sql/pg_stat_statements/statements.sql.
WITH workload AS (
    {statements}
)
SELECT queryid, query, calls, total_time, rows, shared_blks_hit, shared_blks_read
FROM workload
ORDER BY total_time DESC, queryid
