-- Finalized invoices. A draft is never stored: it is computed from the buckets on demand.

-- One gapless sequence for invoice numbers: a single counter row, locked by the
-- finalizing transaction, so a rolled-back finalization leaves no gap (a SEQUENCE would).
CREATE TABLE invoice_counter (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    last       BIGINT NOT NULL
);
INSERT INTO invoice_counter (last) VALUES (0);

CREATE TABLE invoices (
    id            UUID PRIMARY KEY,
    seq           BIGINT NOT NULL UNIQUE CHECK (seq > 0),
    number        TEXT COLLATE "C" NOT NULL UNIQUE,
    tenant        TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    period        DATE NOT NULL CHECK (extract(day FROM period) = 1),
    currency      TEXT NOT NULL,
    plan_id       TEXT COLLATE "C" NOT NULL,
    plan_version  INTEGER NOT NULL,
    total         NUMERIC NOT NULL,
    -- The invoice exactly as the API serves it (lines, per-function split, …), as text so
    -- it is served byte for byte as it was finalized.
    document      TEXT NOT NULL,
    finalized_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, period)
);
CREATE INDEX invoices_newest_first ON invoices (tenant, period DESC, seq DESC);

-- The usage each invoice billed, per period it billed (its own, and earlier periods it
-- adjusted), function and arch: what late usage is measured against.
CREATE TABLE invoice_usage (
    invoice_id  UUID NOT NULL REFERENCES invoices (id),
    tenant      TEXT COLLATE "C" NOT NULL,
    for_period  DATE NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    arch        TEXT COLLATE "C" NOT NULL,
    requests    BIGINT NOT NULL,
    billed_ms   NUMERIC(38, 0) NOT NULL,
    mb_ms       NUMERIC(38, 0) NOT NULL,
    PRIMARY KEY (invoice_id, for_period, function, arch)
);
CREATE INDEX invoice_usage_by_period ON invoice_usage (tenant, for_period);

-- What each finalized invoice billed per charge for each period, so an adjustment is the
-- re-rated period minus everything already billed for it.
CREATE TABLE invoice_charges (
    invoice_id  UUID NOT NULL REFERENCES invoices (id),
    tenant      TEXT COLLATE "C" NOT NULL,
    for_period  DATE NOT NULL,
    line_no     INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('usage', 'adjustment', 'minimum')),
    charge      TEXT COLLATE "C",
    amount      NUMERIC NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);
CREATE INDEX invoice_charges_by_period ON invoice_charges (tenant, for_period);

-- Periods whose finalization has begun (and, once every tenant is done, completed). Late
-- usage for a period listed here is billed as adjustments on a later invoice.
CREATE TABLE finalized_periods (
    period        DATE PRIMARY KEY CHECK (extract(day FROM period) = 1),
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at  TIMESTAMPTZ
);

-- Finalized means final: the database itself refuses to change or remove it.
CREATE FUNCTION refuse_invoice_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'finalized invoices cannot be changed (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER invoices_are_final BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoice_usage_is_final BEFORE UPDATE OR DELETE ON invoice_usage
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoice_charges_are_final BEFORE UPDATE OR DELETE ON invoice_charges
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoices_are_not_truncated BEFORE TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_invoice_change();
