-- pgops pool-report: the server's connection limits and timeouts, and who pgops runs as.
-- reserved_connections exists from PostgreSQL 16 (missing_ok keeps this working on 15).
SELECT now() AS sampled_at,
       current_setting('server_version_num')::int AS server_version_num,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved_connections,
       coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved_connections,
       -- NULL when this session set the value itself (connection options, SET): then it says nothing of what
       -- the applications' sessions get
       (SELECT CASE WHEN source NOT IN ('client', 'session') THEN setting::bigint END
        FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout') AS idle_in_transaction_session_timeout_ms,
       (SELECT CASE WHEN source NOT IN ('client', 'session') THEN setting::bigint END
        FROM pg_settings WHERE name = 'idle_session_timeout') AS idle_session_timeout_ms,
       pg_backend_pid() AS own_pid,
       current_user AS current_user,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
       pg_has_role('pg_read_all_stats', 'MEMBER') AS reads_all_stats,
       pg_has_role('pg_signal_backend', 'MEMBER') AS signals_backends,
       coalesce(host(inet_server_addr()) IN ('127.0.0.1', '::1'), true) AS server_is_local
