-- pgops pool-report: one snapshot of the sessions that take a connection slot, pgops' own session left out.
-- Client backends only: autovacuum, WAL senders and background workers have slots of their own.
-- A role without pg_monitor sees other roles' sessions with NULL details (backend_type too): those rows are
-- kept, marked hidden, when they name a database and a user (background workers without one are left out).
-- pg_blocking_pids() takes the lock manager's locks, so it runs only for sessions waiting on a lock.
SELECT a.pid,
       a.datname,
       a.usename,
       a.application_name,
       host(a.client_addr) AS client_addr,
       a.backend_start,
       a.xact_start,
       a.query_start,
       a.state_change,
       a.state,
       a.wait_event_type,
       a.wait_event,
       age(a.backend_xmin) AS xmin_age,
       a.query,
       a.backend_type IS NULL AS hidden,
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blocked_by
FROM pg_stat_activity AS a
WHERE a.pid <> pg_backend_pid()
  AND (a.backend_type = 'client backend'
       OR (a.backend_type IS NULL AND a.datname IS NOT NULL AND a.usename IS NOT NULL))
