-- The statement_timeout the application's sessions get in the current database, without pgops' own session
-- setting: the database's ALTER DATABASE ... SET, else the server's configuration (postgresql.conf, ALTER
-- SYSTEM; readable by superusers and pg_read_all_settings), else the built-in default. Text as configured.
SELECT coalesce(
    (SELECT substr(c, length('statement_timeout=') + 1)
     FROM pg_db_role_setting s, unnest(s.setconfig) c
     WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND s.setrole = 0 AND c LIKE 'statement\_timeout=%'),
    (SELECT setting FROM pg_file_settings
     WHERE name = 'statement_timeout' AND applied AND error IS NULL ORDER BY seqno DESC LIMIT 1),
    (SELECT boot_val FROM pg_settings WHERE name = 'statement_timeout')
) AS statement_timeout
