-- Which cluster a server belongs to and its role in it: a primary and its standbys share the system identifier
-- (pg_basebackup copies it), and pg_is_in_recovery() is true on a standby. Two databases of one server share
-- the identifier too: the database name tells them apart.
SELECT system_identifier::text AS system_identifier,
       pg_is_in_recovery()     AS in_recovery,
       current_database()      AS database
  FROM pg_control_system()
