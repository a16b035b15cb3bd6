-- Existing indexes from pg_index: key columns are the first indnkeyatts entries of indkey (0 = an expression),
-- the rest are INCLUDE columns; the predicate comes from indpred. Never parsed from the index definition.
SELECT ni.nspname AS schema,
       ic.relname AS name,
       nt.nspname AS table_schema,
       tc.relname AS table_name,
       i.indnkeyatts AS key_count,
       array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.ord) AS columns,
       array(SELECT CASE WHEN oc.opcdefault THEN NULL ELSE oc.opcname END
             FROM unnest(i.indclass::oid[]) WITH ORDINALITY AS k(opclass, ord)
             JOIN pg_opclass oc ON oc.oid = k.opclass ORDER BY k.ord) AS opclasses,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       am.amname AS method,
       i.indisunique AS is_unique,
       i.indisprimary AS is_primary,
       (SELECT con.conname FROM pg_constraint con
        WHERE con.conindid = i.indexrelid AND con.contype IN ('p', 'u', 'x', 'f')
        ORDER BY con.contype = 'f', con.conname LIMIT 1) AS constraint_name,
       i.indisvalid AS is_valid,
       coalesce(s.idx_scan, 0) AS scans,
       pg_relation_size(i.indexrelid) AS size_bytes,
       pg_get_indexdef(i.indexrelid) AS definition,
       obj_description(i.indexrelid, 'pg_class') AS comment
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace ni ON ni.oid = ic.relnamespace
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace nt ON nt.oid = tc.relnamespace
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
WHERE nt.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND nt.nspname !~ '^pg_temp_'
ORDER BY nt.nspname, tc.relname, ic.relname
