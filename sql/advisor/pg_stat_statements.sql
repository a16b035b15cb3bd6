-- The workload of the current database from pg_stat_statements, heaviest first, with how many statements the
-- filters leave out (on every row; a single row of NULL statement columns when none is kept). {schema} is the
-- extension's schema; {total_time} is total_exec_time on PostgreSQL 13 and newer, total_time before.
-- The statements come from sql/pg_stat_statements/statements.sql, which leaves pgops' own out.
WITH workload AS (
    {statements}
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
