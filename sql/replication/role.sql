-- A server's role, read each time and never configured: true on a standby (in recovery), false on a primary.
SELECT pg_is_in_recovery()
