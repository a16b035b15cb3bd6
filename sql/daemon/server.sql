-- The role of the server this session reached: a standby is in recovery; a primary may still refuse writes
-- (default_transaction_read_only, or a failover manager fencing an old primary).
SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') = 'on' AS read_only
