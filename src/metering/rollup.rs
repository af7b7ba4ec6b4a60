//! The monthly roll-up of the hourly buckets, behind a watermark.
//!
//! Pricing a period reads one row per function and arch from `usage_monthly` instead of ~720
//! hourly rows. Writing that row with every batch doubled the bucket upserts of ingestion, so
//! an ingest transaction now writes `usage_monthly` only for late events, whose hour is before
//! the watermark `usage_rollup.rolled_to`; later hours stay in `usage_hourly` alone until
//! [`roll_up`] adds them to `usage_monthly` and moves the watermark past them, in one
//! transaction. A period's usage is therefore `usage_monthly` plus the hourly rows from the
//! watermark on ([`PERIOD_USAGE`]), read in one statement, so one snapshot.
//!
//! Every ingest transaction first takes [`ROLLUP_LOCK`] shared ([`hold_off_rollup`]) and only
//! then reads the watermark; the roll-up takes it exclusively. So the roll-up starts only once
//! no ingest transaction that read the old watermark is in flight, and one that starts later
//! waits for the roll-up's commit and reads the new watermark: each event is added to
//! `usage_monthly` exactly once, by its own transaction or by the roll-up.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// The advisory lock (two-key form) between ingest transactions and the roll-up.
const ROLLUP_LOCK: (i32, i32) = (0x726f_6c6c, 0); // "roll"

/// How long after an hour ends it is rolled up, so that events for it arriving a little late
/// still take the cheap path.
const ROLLUP_LAG: &str = "10 minutes";

/// How often `serve` checks whether an hour is due.
pub const ROLLUP_INTERVAL: Duration = Duration::from_secs(60);

/// A tenant's usage of one period per function and arch: `$1` tenant, `$2` period (date),
/// `$3` and `$4` the period's first and next period's first instant.
pub const PERIOD_USAGE: &str = "
    SELECT function, arch, sum(requests)::int8, sum(billed_ms)::text, sum(mb_ms)::text
    FROM (SELECT function, arch, requests, billed_ms, mb_ms
          FROM usage_monthly WHERE tenant = $1 AND period = $2
          UNION ALL
          SELECT function, arch, requests, billed_ms, mb_ms
          FROM usage_hourly
          WHERE tenant = $1 AND hour >= $3 AND hour < $4
            AND hour >= (SELECT rolled_to FROM usage_rollup)) AS u
    GROUP BY function, arch";

/// Holds off the roll-up until this ingest transaction ends. Take it before any other lock
/// and before reading the watermark.
pub async fn hold_off_rollup(tx: &mut Transaction<'_, Postgres>) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(ROLLUP_LOCK.0)
        .bind(ROLLUP_LOCK.1)
        .execute(&mut **tx)
        .await
        .context("hold off the monthly roll-up")?;
    Ok(())
}

/// Rolls every hour before `before` (which should be a whole hour) into `usage_monthly` and
/// moves the watermark there; returns the hourly rows it added, 0 if the watermark was
/// already there. Safe to run concurrently with ingestion and with itself.
pub async fn roll_up(pool: &PgPool, before: DateTime<Utc>) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await.context("begin")?;
    let (due,): (bool,) = sqlx::query_as("SELECT rolled_to < $1 FROM usage_rollup")
        .bind(before)
        .fetch_one(&mut *tx)
        .await
        .context("read the roll-up watermark")?;
    if !due {
        return Ok(0);
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(ROLLUP_LOCK.0)
        .bind(ROLLUP_LOCK.1)
        .execute(&mut *tx)
        .await
        .context("take the roll-up lock")?;
    // Per tenant, so each scan is a range of the hourly primary key; sorted, as every writer
    // of usage_monthly locks its rows.
    let added = sqlx::query(
        "INSERT INTO usage_monthly AS u (tenant, period, function, arch, requests, billed_ms, mb_ms)
         SELECT t.id, h.period, h.function, h.arch, h.requests, h.billed_ms, h.mb_ms
         FROM tenants t, usage_rollup r,
              LATERAL (SELECT (date_trunc('month', hour AT TIME ZONE 'UTC'))::date AS period,
                              function, arch, sum(requests)::int8 AS requests,
                              sum(billed_ms) AS billed_ms, sum(mb_ms) AS mb_ms
                       FROM usage_hourly
                       WHERE tenant = t.id AND hour >= r.rolled_to AND hour < $1
                       GROUP BY 1, 2, 3) AS h
         ORDER BY 1, 2, 3, 4
         ON CONFLICT (tenant, period, function, arch) DO UPDATE SET
             requests = u.requests + EXCLUDED.requests,
             billed_ms = u.billed_ms + EXCLUDED.billed_ms,
             mb_ms = u.mb_ms + EXCLUDED.mb_ms",
    )
    .bind(before)
    .execute(&mut *tx)
    .await
    .context("roll hourly buckets up into usage_monthly")?
    .rows_affected();
    sqlx::query("UPDATE usage_rollup SET rolled_to = $1 WHERE rolled_to < $1")
        .bind(before)
        .execute(&mut *tx)
        .await
        .context("move the roll-up watermark")?;
    tx.commit().await.context("commit")?;
    Ok(added)
}

/// Rolls up the hours that ended at least [`ROLLUP_LAG`] ago (by the database's clock);
/// `serve` runs it every [`ROLLUP_INTERVAL`].
pub async fn roll_up_due(pool: &PgPool) -> anyhow::Result<u64> {
    let (before,): (DateTime<Utc>,) =
        sqlx::query_as("SELECT date_trunc('hour', now() - $1::interval, 'UTC')")
            .bind(ROLLUP_LAG)
            .fetch_one(pool)
            .await
            .context("read the database clock")?;
    roll_up(pool, before).await
}
