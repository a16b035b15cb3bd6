-- Which database the snapshot is of, and when it was taken.
SELECT current_database() AS database, now() AS sampled_at
