-- pgops pool-report: per-database and per-role connection limits (-1 = none), and which roles are superusers
-- (their own limit is not enforced, and only a superuser may end their sessions).
SELECT 'database' AS kind, datname AS name, datconnlimit AS connection_limit, false AS superuser
FROM pg_database
WHERE datallowconn AND datconnlimit >= 0
UNION ALL
SELECT 'role', rolname, rolconnlimit, rolsuper
FROM pg_roles
WHERE rolcanlogin
