-- usage_monthly is no longer written with every batch: the ingest transaction adds an event to
-- usage_monthly only when its hour is before `rolled_to` (late usage); later hours live in
-- usage_hourly alone until the roll-up adds them to usage_monthly and moves `rolled_to` past
-- them, in one transaction. A period's usage is usage_monthly plus the hourly rows from
-- `rolled_to` on. Ingest holds a shared advisory lock and the roll-up an exclusive one, so the
-- roll-up never runs while an ingest transaction that read the old watermark is in flight.
CREATE TABLE usage_rollup (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_to  TIMESTAMPTZ NOT NULL
);

-- Until now every hourly bucket was written to usage_monthly in the same transaction: all of
-- them are rolled up already.
INSERT INTO usage_rollup (rolled_to)
SELECT COALESCE(max(hour) + interval '1 hour', '-infinity') FROM usage_hourly;
