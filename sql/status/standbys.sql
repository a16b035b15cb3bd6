-- On a primary: each standby streaming from it (one row per WAL sender), how far its replay is behind, and the
-- xmin its hot_standby_feedback holds the primary's vacuum to (on the WAL sender, or on the slot it streams
-- through). Without pg_monitor the lag columns read NULL.
SELECT r.pid,
       r.application_name,
       host(r.client_addr)                                              AS client_addr,
       r.state,
       r.sync_state,
       s.slot_name,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint      AS replay_lag_bytes,
       extract(epoch FROM r.replay_lag)::float8                         AS replay_lag_seconds,
       coalesce(r.backend_xmin, s.xmin)::text                           AS feedback_xmin,
       age(coalesce(r.backend_xmin, s.xmin))                            AS feedback_xmin_age
  FROM pg_stat_replication r
  LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
 ORDER BY r.application_name, r.pid
