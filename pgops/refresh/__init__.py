"""Debounced, never-lost refresh of materialized views: registration (`watch`), queue reads (`queue`),
processing (`process`) and pg_cron scheduling (`cron`). The rules live in `sql/refresh/install.sql`."""
