-- Core schema: tenants, versioned plans, the accepted-event ledger, usage buckets, API keys.
-- Identifiers use the "C" collation: byte order is what the application sorts by when it
-- takes row locks, so every writer locks in the same order and competing consumers never
-- deadlock; it is also the fastest comparison.

CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE plans (
    id          TEXT COLLATE "C" NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    document    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);

-- Which plan a tenant is on from a billing period (first day of a UTC month) onwards.
CREATE TABLE tenant_plans (
    tenant          TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    effective_from  DATE NOT NULL CHECK (extract(day FROM effective_from) = 1),
    plan_id         TEXT COLLATE "C" NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, effective_from)
);

-- Every (tenant, event id) ever accepted: the idempotency ledger. An insert that conflicts
-- is a duplicate. Rows older than metering.max_event_age can be pruned: an event that old is
-- rejected as too_old before it reaches the ledger.
CREATE TABLE accepted_events (
    tenant       TEXT COLLATE "C" NOT NULL,
    event_id     TEXT COLLATE "C" NOT NULL,
    accepted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, event_id)
);
-- Rows arrive in accepted_at order, so a BRIN index makes pruning cheap at almost no write cost.
CREATE INDEX accepted_events_accepted_at ON accepted_events USING brin (accepted_at);

-- Hourly usage per tenant, function and arch. Sums are exact integers; NUMERIC so that no
-- realistic volume overflows (an overflow would turn good usage into a retry loop).
CREATE TABLE usage_hourly (
    tenant     TEXT COLLATE "C" NOT NULL,
    hour       TIMESTAMPTZ NOT NULL CHECK (date_trunc('hour', hour AT TIME ZONE 'UTC') = hour AT TIME ZONE 'UTC'),
    function   TEXT COLLATE "C" NOT NULL,
    arch       TEXT COLLATE "C" NOT NULL CHECK (arch IN ('x86_64', 'arm64')),
    requests   BIGINT NOT NULL CHECK (requests >= 0),
    billed_ms  NUMERIC(38, 0) NOT NULL CHECK (billed_ms >= 0),
    mb_ms      NUMERIC(38, 0) NOT NULL CHECK (mb_ms >= 0),
    PRIMARY KEY (tenant, hour, function, arch)
);

-- The same usage rolled up per billing period, written in the same transaction as the hourly
-- rows, so pricing a month reads one row per function and arch instead of ~720.
CREATE TABLE usage_monthly (
    tenant     TEXT COLLATE "C" NOT NULL,
    period     DATE NOT NULL CHECK (extract(day FROM period) = 1),
    function   TEXT COLLATE "C" NOT NULL,
    arch       TEXT COLLATE "C" NOT NULL CHECK (arch IN ('x86_64', 'arm64')),
    requests   BIGINT NOT NULL CHECK (requests >= 0),
    billed_ms  NUMERIC(38, 0) NOT NULL CHECK (billed_ms >= 0),
    mb_ms      NUMERIC(38, 0) NOT NULL CHECK (mb_ms >= 0),
    PRIMARY KEY (tenant, period, function, arch)
);

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    key_hash    BYTEA NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'finance', 'ingest', 'tenant')),
    tenant      TEXT COLLATE "C" REFERENCES tenants (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((role = 'tenant') = (tenant IS NOT NULL))
);
