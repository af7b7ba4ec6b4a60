//! Pruning the accepted-event ledger.
//!
//! The ledger only has to remember an event id for as long as the event could still be
//! accepted: an event older than `metering.max_event_age_days` is rejected as `too_old` before
//! the ledger is consulted. An event is never accepted more than a few minutes before its own
//! timestamp, so a row accepted more than `max_event_age_days` plus a day ago belongs to an
//! event that would be `too_old` today, whatever the two clocks say within that day. Such
//! rows are deleted; the buckets they counted into stay as they are.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;

/// How often `serve` prunes the ledger.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Rows deleted per statement, so a prune never holds many row locks or one long transaction.
const PRUNE_CHUNK: i64 = 10_000;

/// Deletes ledger rows accepted more than `max_event_age_days` + 1 day ago (by the database's
/// clock); returns how many. `serve` runs it every [`PRUNE_INTERVAL`]. Safe to run
/// concurrently with ingestion and with itself.
pub async fn prune_ledger(pool: &PgPool, max_event_age_days: u32) -> anyhow::Result<u64> {
    let retention_days = i32::try_from(max_event_age_days)
        .ok()
        .and_then(|days| days.checked_add(1))
        .context("metering.max_event_age_days is too large to prune by")?;
    let mut pruned = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM accepted_events WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM accepted_events
                 WHERE accepted_at < now() - make_interval(days => $1)
                 LIMIT $2))",
        )
        .bind(retention_days)
        .bind(PRUNE_CHUNK)
        .execute(pool)
        .await
        .context("prune the accepted-event ledger")?
        .rows_affected();
        pruned += deleted;
        if deleted < PRUNE_CHUNK as u64 {
            return Ok(pruned);
        }
    }
}
