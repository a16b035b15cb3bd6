-- On a standby: where it streams from and how far its replay is behind what it received. The time is that of
-- the last replayed commit, so it counts only while WAL waits to be replayed (an idle primary is no lag).
SELECT w.status                                                         AS receiver_status,
       w.sender_host,
       w.sender_port,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint AS replay_lag_bytes,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
       END                                                              AS replay_lag_seconds
  FROM (SELECT 1) AS one
  LEFT JOIN pg_stat_wal_receiver w ON true
