-- Replication slots and the WAL each keeps on this server's disk (from its restart_lsn), and the xmin it holds
-- vacuum to. An inactive slot keeps its WAL until it is used again or dropped.
SELECT slot_name,
       slot_type,
       database,
       active,
       active_pid,
       wal_status,
       pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, restart_lsn
       )::bigint                                                        AS retained_bytes,
       greatest(age(xmin), age(catalog_xmin))                           AS xmin_age
  FROM pg_replication_slots
 ORDER BY slot_name
