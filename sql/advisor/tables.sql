-- Tables and their columns with planner statistics, for every table the current user can see outside the
-- system schemas. pg_stats' anyarray columns are read as text arrays (the values' own text form).
-- A partitioned parent holds no rows itself (reltuples -1 until it is analyzed by hand, no pages): it counts
-- its leaf partitions' rows, pages and size, and its columns' statistics are its own over all partitions when
-- ANALYZE ran on it (autovacuum never does), else its largest partition's.
SELECT n.nspname AS schema,
       c.relname AS name,
       (CASE WHEN c.relkind = 'p' THEN leaves.reltuples ELSE greatest(c.reltuples, 0) END)::float8 AS reltuples,
       (CASE WHEN c.relkind = 'p' THEN leaves.relpages ELSE c.relpages END)::int AS relpages,
       CASE WHEN c.relkind = 'p' THEN leaves.size_bytes ELSE pg_table_size(c.oid) END AS size_bytes,
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
LEFT JOIN LATERAL (
    SELECT coalesce(sum(greatest(l.reltuples, 0)), 0) AS reltuples, coalesce(sum(l.relpages), 0) AS relpages,
           coalesce(sum(pg_table_size(l.oid)), 0)::bigint AS size_bytes
    FROM pg_partition_tree(c.oid) pt JOIN pg_class l ON l.oid = pt.relid
    WHERE c.relkind = 'p' AND pt.isleaf
) leaves ON true
LEFT JOIN LATERAL (
    SELECT sn.nspname AS schema, sc.relname AS name, (sc.oid = c.oid AND c.relkind = 'p') AS inherited
    FROM (SELECT c.oid AS relid, 0 AS rank
          WHERE c.relkind <> 'p'
             OR EXISTS (SELECT 1 FROM pg_stats x WHERE x.schemaname = n.nspname AND x.tablename = c.relname
                                                   AND x.inherited)
          UNION ALL
          SELECT pt.relid, 1 FROM pg_partition_tree(c.oid) pt WHERE c.relkind = 'p' AND pt.isleaf) found
    JOIN pg_class sc ON sc.oid = found.relid
    JOIN pg_namespace sn ON sn.oid = sc.relnamespace
    ORDER BY found.rank, sc.reltuples DESC
    LIMIT 1
) src ON true
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_stats st ON st.schemaname = src.schema AND st.tablename = src.name AND st.attname = a.attname
                     AND st.inherited = src.inherited
WHERE c.relkind IN ('r', 'p', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname !~ '^pg_temp_'
GROUP BY n.nspname, c.relname, c.oid, c.relkind, c.reltuples, c.relpages, leaves.reltuples, leaves.relpages,
         leaves.size_bytes, s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del
