-- One run per policy at a time across every pgops process.
SELECT pg_try_advisory_lock(hashtextextended(%(key)s, 0))
