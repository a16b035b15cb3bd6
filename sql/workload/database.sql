-- Which database the snapshot is of, when it was taken, and the role that reads it (to name it in a GRANT).
SELECT current_database() AS database, now() AS sampled_at, current_user AS role
