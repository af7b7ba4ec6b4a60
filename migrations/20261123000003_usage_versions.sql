-- A counter per tenant that every transaction adding usage bumps, so a cached draft is
-- checked against a handful of rows instead of summing the tenant's monthly buckets.
-- One row per (tenant, slot): the consumer's concurrent writers use different slots (the
-- index of their part of a batch), so their transactions never share a row; the draft's
-- stamp is the sum over slots, which grows with every change.
CREATE TABLE usage_versions (
    tenant   TEXT COLLATE "C" NOT NULL,
    slot     INTEGER NOT NULL CHECK (slot >= 0),
    version  BIGINT NOT NULL,
    PRIMARY KEY (tenant, slot)
);
