-- On a standby: the session holding the oldest snapshot (its xmin is what hot_standby_feedback sends the
-- primary), and the name this standby's WAL receiver gives the primary (its conninfo's application_name, else
-- cluster_name, else walreceiver; conninfo reads NULL without pg_read_all_stats).
SELECT (SELECT conninfo FROM pg_stat_wal_receiver)               AS receiver_conninfo,
       current_setting('cluster_name')                           AS cluster_name,
       a.pid,
       a.application_name,
       a.usename                                                 AS "user",
       a.state,
       a.backend_xmin::text                                      AS xmin,
       extract(epoch FROM now() - a.xact_start)::float8          AS transaction_seconds,
       extract(epoch FROM now() - a.query_start)::float8         AS query_seconds
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
        SELECT * FROM pg_stat_activity
         WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
         ORDER BY age(backend_xmin) DESC
         LIMIT 1) AS a ON true
