-- Each tenant's finalization of each period, with or without an invoice. A period is closed
-- for a tenant (its later usage is late, billed as adjustments) only once its own
-- finalization is recorded here, or the period's finalization has completed for every
-- tenant; a period whose finalization has merely begun elsewhere is not, so finalizing
-- two periods at once never bills one period's usage as the other's adjustment.
CREATE TABLE tenant_finalizations (
    tenant        TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    period        DATE NOT NULL CHECK (extract(day FROM period) = 1),
    finalized_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, period)
);

-- What earlier versions finalized: every invoice, and every period an invoice billed
-- (adjustments included), finalized for its tenant when it was first billed.
INSERT INTO tenant_finalizations (tenant, period, finalized_at)
SELECT tenant, period, min(finalized_at) FROM (
    SELECT tenant, period, finalized_at FROM invoices
    UNION ALL
    SELECT u.tenant, u.for_period, i.finalized_at
    FROM invoice_usage u JOIN invoices i ON i.id = u.invoice_id
) billed
GROUP BY tenant, period;

CREATE TRIGGER tenant_finalizations_are_final BEFORE UPDATE OR DELETE ON tenant_finalizations
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
