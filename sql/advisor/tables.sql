-- Tables and their columns with planner statistics, for every table the current user can see outside the
-- system schemas. pg_stats' anyarray columns are read as text arrays (the values' own text form).
SELECT n.nspname AS schema,
       c.relname AS name,
       greatest(c.reltuples, 0)::float8 AS reltuples,
       c.relpages::int AS relpages,
       pg_table_size(c.oid) AS size_bytes,
       coalesce(s.n_tup_ins, 0) AS n_tup_ins,
       coalesce(s.n_tup_upd, 0) AS n_tup_upd,
       coalesce(s.n_tup_hot_upd, 0) AS n_tup_hot_upd,
       coalesce(s.n_tup_del, 0) AS n_tup_del,
       (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)::int AS index_count,
       coalesce(json_agg(json_build_object(
           'name', a.attname,
           'type', format_type(a.atttypid, a.atttypmod),
           'not_null', a.attnotnull,
           'btree', EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
                            WHERE am.amname = 'btree' AND oc.opcdefault
                              AND (oc.opcintype = a.atttypid
                                   OR oc.opcintype = (SELECT t.typbasetype FROM pg_type t
                                                      WHERE t.oid = a.atttypid AND t.typbasetype <> 0)
                                   OR (oc.opcintype = 'text'::regtype
                                       AND a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype))
                                   OR (oc.opcintype = 'anyarray'::regtype AND t.typcategory = 'A'))),
           'c_collation', CASE WHEN a.attcollation = 0 THEN true
                               WHEN a.attcollation = 100 THEN (SELECT d.datcollate IN ('C', 'POSIX') FROM pg_database d
                                                                WHERE d.datname = current_database())
                               ELSE coalesce((SELECT co.collprovider = 'c' AND co.collcollate IN ('C', 'POSIX')
                                              FROM pg_collation co WHERE co.oid = a.attcollation), false) END,
           'null_frac', st.null_frac,
           'n_distinct', st.n_distinct,
           'most_common_vals', st.most_common_vals::text::text[],
           'most_common_freqs', st.most_common_freqs,
           'histogram_bounds', st.histogram_bounds::text::text[],
           'avg_width', st.avg_width,
           'correlation', st.correlation
       ) ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '[]') AS columns
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = c.relname AND st.attname = a.attname
                     AND NOT st.inherited
WHERE c.relkind IN ('r', 'p', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname !~ '^pg_temp_'
GROUP BY n.nspname, c.relname, c.oid, c.reltuples, c.relpages, s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del
