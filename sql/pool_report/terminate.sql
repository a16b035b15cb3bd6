-- pgops pool-report: end one session idle in a transaction, only if it is still the same session (pid and
-- backend_start), still idle in a transaction, and has been since at least the threshold: a pid seen in the
-- sample may have finished its transaction or been reused since.
SELECT pg_terminate_backend(pid)
FROM pg_stat_activity
WHERE pid = %(pid)s
  AND backend_start = %(backend_start)s
  AND state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND state_change <= now() - %(threshold)s::interval
