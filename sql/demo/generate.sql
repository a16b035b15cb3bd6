-- Realistic volumes for the demo schema; the setting pgops.demo_scale multiplies every row count (1.0 ≈ 1.1 M rows).
-- Run as one transaction; ANALYZE afterwards so the planner (and pgops) see real statistics.
INSERT INTO funds (name, currency, created_at)
SELECT 'Fund ' || g, (ARRAY['EUR','USD','GBP'])[1 + g % 3], now() - g * interval '1 day'
FROM generate_series(1, greatest(10, (200 * current_setting('pgops.demo_scale')::float8)::int)) g;

INSERT INTO fund_trades (fund_id, amount, traded_at)
SELECT 1 + (random() * (SELECT count(*) - 1 FROM funds))::bigint,
       round((random() * 20000 - 5000)::numeric, 2),
       now() - random() * interval '90 days'
FROM generate_series(1, greatest(100, (200000 * current_setting('pgops.demo_scale')::float8)::int));

INSERT INTO customers (tenant_id, email, name, created_at)
SELECT 1 + g % 50, 'user' || g || '@tenant' || (1 + g % 50) || '.example', 'Customer ' || g,
       now() - random() * interval '3 years'
FROM generate_series(1, greatest(100, (100000 * current_setting('pgops.demo_scale')::float8)::int)) g;

-- Most orders are done; a few percent are open, the newest ones.
INSERT INTO orders (customer_id, status, total, created_at)
SELECT 1 + (random() * (SELECT count(*) - 1 FROM customers))::bigint,
       CASE WHEN r < 0.04 THEN 'open' WHEN r < 0.10 THEN 'shipped' WHEN r < 0.12 THEN 'cancelled' ELSE 'delivered' END,
       round((random() * 500 + 5)::numeric, 2),
       now() - (1 - r) * interval '2 years'
FROM (SELECT random() AS r FROM generate_series(1, greatest(500, (500000 * current_setting('pgops.demo_scale')::float8)::int))) s;

-- Half the idempotency keys and 40% of the sessions have expired.
INSERT INTO idempotency_keys (key, request_hash, response, created_at, expires_at)
SELECT 'idem-' || g, md5(g::text), jsonb_build_object('status', 201, 'id', g),
       now() - (g % 48) * interval '1 hour', now() + (24 - g % 48) * interval '1 hour'
FROM generate_series(1, greatest(100, (200000 * current_setting('pgops.demo_scale')::float8)::int)) g;

INSERT INTO sessions (user_id, data, created_at, last_seen_at, expires_at)
SELECT g, jsonb_build_object('theme', 'dark'), now() - interval '2 days', now() - (g % 10) * interval '1 hour',
       now() + (6 - g % 10) * interval '1 day'
FROM generate_series(1, greatest(100, (100000 * current_setting('pgops.demo_scale')::float8)::int)) g;

-- Sixty days of request logs, spread evenly.
INSERT INTO request_logs (tenant_id, path, status, duration_ms, created_at)
SELECT 1 + g % 50, (ARRAY['/api/orders','/api/customers','/api/funds','/login'])[1 + g % 4],
       (ARRAY[200,200,200,201,404,500])[1 + g % 6], (random() * 300)::int,
       now() - random() * interval '60 days'
FROM generate_series(1, greatest(100, (500000 * current_setting('pgops.demo_scale')::float8)::int)) g;

REFRESH MATERIALIZED VIEW fund_stats;
