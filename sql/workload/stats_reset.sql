-- Since when pg_stat_statements has counted (PostgreSQL 14 and newer): the report's figures cover that span.
-- {schema} is the extension's schema.
SELECT stats_reset FROM {schema}.pg_stat_statements_info
