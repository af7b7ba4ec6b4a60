-- API key lifecycle: keys may expire, are revoked rather than deleted (the row stays for the
-- audit trail; the hash of a revoked key is never accepted again), and record their last use
-- coarsely (at most about once a minute per key, written off the request path).
ALTER TABLE api_keys
    ADD COLUMN expires_at    TIMESTAMPTZ,
    ADD COLUMN last_used_at  TIMESTAMPTZ,
    ADD COLUMN revoked_at    TIMESTAMPTZ;

-- The listing's keyset order.
CREATE INDEX api_keys_created_at_id ON api_keys (created_at, id);
