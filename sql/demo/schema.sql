-- The demo application: the shapes of the systems pgops serves. Some indexes are missing on purpose
-- (customers (tenant_id, email), orders (customer_id), idempotency_keys (expires_at)): pgops finds them.

CREATE TABLE funds (
    id          bigserial PRIMARY KEY,
    name        text        NOT NULL,
    currency    char(3)     NOT NULL DEFAULT 'EUR',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fund_trades (
    id         bigserial PRIMARY KEY,
    fund_id    bigint        NOT NULL REFERENCES funds (id),
    amount     numeric(14,2) NOT NULL,
    traded_at  timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX fund_trades_fund_id ON fund_trades (fund_id);

-- Read by dashboards on every page view; refreshed by pgops, debounced, CONCURRENTLY.
CREATE MATERIALIZED VIEW fund_stats AS
SELECT f.id                        AS fund_id,
       f.name,
       count(t.id)                 AS trades,
       coalesce(sum(t.amount), 0)  AS volume,
       max(t.traded_at)            AS last_trade_at
FROM funds f
LEFT JOIN fund_trades t ON t.fund_id = f.id
GROUP BY f.id, f.name;
CREATE UNIQUE INDEX fund_stats_fund_id ON fund_stats (fund_id);

CREATE TABLE idempotency_keys (
    key           text        PRIMARY KEY,
    request_hash  text        NOT NULL,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);

CREATE TABLE sessions (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       bigint      NOT NULL,
    data          jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE request_logs (
    id           bigserial   PRIMARY KEY,
    tenant_id    int         NOT NULL,
    path         text        NOT NULL,
    status       smallint    NOT NULL,
    duration_ms  int         NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_logs_created_at ON request_logs (created_at);

CREATE TABLE customers (
    id          bigserial   PRIMARY KEY,
    tenant_id   int         NOT NULL,
    email       text        NOT NULL,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id           bigserial     PRIMARY KEY,
    customer_id  bigint        NOT NULL REFERENCES customers (id),
    status       text          NOT NULL DEFAULT 'open',
    total        numeric(12,2) NOT NULL,
    created_at   timestamptz   NOT NULL DEFAULT now()
);
