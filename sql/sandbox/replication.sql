-- The sandbox's replicas as its primary sees them: each names itself replica-<n> (application_name).
SELECT application_name, state FROM pg_stat_replication
