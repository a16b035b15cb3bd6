-- The database pg_cron runs in (NULL when pg_cron is not loaded): where its job history lives.
SELECT current_setting('cron.database_name', true)
