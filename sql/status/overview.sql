-- One round trip for `pgops status`: the server, the session's role, and what pgops relies on.
SELECT current_setting('server_version')                                    AS server_version,
       current_setting('server_version_num')::int                          AS server_version_num,
       current_database()                                                   AS database,
       current_user                                                         AS "user",
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)         AS superuser,
       pg_has_role(current_user, 'pg_monitor', 'USAGE')                     AS pg_monitor,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries') AS preload,  -- NULL when hidden
       (SELECT setting FROM pg_settings WHERE name = 'cron.database_name') AS cron_database,
       pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')          AS reads_all_settings,
       to_regclass('pgops.alembic_version') IS NOT NULL                     AS pgops_installed,
       pg_is_in_recovery()                                                  AS in_recovery,  -- a standby
       (SELECT json_object_agg(name, installed_version IS NOT NULL)
          FROM pg_available_extensions
         WHERE name IN ('pg_stat_statements', 'pg_cron', 'hypopg'))         AS extensions
