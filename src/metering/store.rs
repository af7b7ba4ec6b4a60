//! Records a batch of usage events exactly once: one transaction that creates unknown
//! tenants, inserts every event id into the accepted-event ledger, and adds only the events
//! the ledger had not seen to the hourly buckets (and to the monthly ones for hours already
//! rolled up, see [`rollup`]).
//!
//! The ledger insert is most of the database's work per event, and `ON CONFLICT DO NOTHING`
//! costs about twice a plain insert (a speculative insertion per row). So a batch is first
//! tried the cheap way: a plain insert while no duplicates have been seen lately, or one
//! that skips ids already in the ledger when they have. Either can still meet an id that a
//! concurrent transaction committed meanwhile; the unique index then refuses the batch, and
//! it is recorded again from scratch with `ON CONFLICT DO NOTHING`, which always succeeds.
//! The unique index, not the choice of statement, is what guarantees exactly once.
//!
//! Locks are always taken in the same order (the roll-up lock, shared; then tenants, ledger,
//! hourly, monthly, usage versions; each sorted by key, byte order = the "C" collation), so
//! competing consumers wait for each other but never deadlock, and a duplicate racing its twin in another transaction waits for that
//! transaction and is then seen as a duplicate.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use chrono::{DateTime, Timelike, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};

use super::{MeteringRules, UsageEvent, rollup};

/// What a batch did: events newly counted and events already counted before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    pub accepted: u64,
    pub duplicates: u64,
}

/// The write side of metering: shared by the AMQP consumer and HTTP ingest.
pub struct MeterStore {
    pool: PgPool,
    rules: MeteringRules,
    default_plan: String,
    /// Tenants known to exist, so most batches skip the tenant upsert. Tenants are never
    /// deleted, so a stale entry cannot be wrong.
    known_tenants: Mutex<HashSet<String>>,
    /// Batches left before the ledger is tried with a plain insert again; set whenever the
    /// ledger meets a duplicate.
    wary_batches: AtomicU32,
}

/// After a batch meets a duplicate in the ledger, this many batches skip known ids first.
const WARY_BATCHES: u32 = 32;

/// How a batch's ids go into the ledger; all three record the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LedgerInsert {
    /// A plain insert: the cheapest, and refused (unique violation) by any duplicate.
    Plain,
    /// Skips ids already committed; refused only by a twin committed concurrently.
    SkipKnown,
    /// `ON CONFLICT DO NOTHING`: never refused.
    OnConflict,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct BucketKey<'a> {
    tenant: &'a str,
    start: DateTime<Utc>,
    function: &'a str,
    arch: &'static str,
}

#[derive(Debug, Clone, Copy, Default)]
struct BucketSums {
    requests: i64,
    billed_ms: i128,
    mb_ms: i128,
}

impl MeterStore {
    pub fn new(pool: PgPool, rules: MeteringRules, default_plan: String) -> Self {
        MeterStore {
            pool,
            rules,
            default_plan,
            known_tenants: Mutex::new(HashSet::new()),
            wary_batches: AtomicU32::new(0),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn rules(&self) -> &MeteringRules {
        &self.rules
    }

    /// Records the events in one transaction; on error nothing is recorded.
    pub async fn record_events(&self, events: &[UsageEvent]) -> anyhow::Result<RecordOutcome> {
        self.record_part(events, 0).await
    }

    /// Records one part of a split batch (see [`split_by_series`]); `part` picks the row of
    /// `usage_versions` it bumps, so concurrent parts never share a row.
    #[tracing::instrument(skip_all, fields(events = events.len(), part))]
    pub async fn record_part(
        &self,
        events: &[UsageEvent],
        part: usize,
    ) -> anyhow::Result<RecordOutcome> {
        // The first occurrence of an id in the batch wins; later ones are duplicates.
        let mut seen = HashSet::with_capacity(events.len());
        let mut candidates: Vec<&UsageEvent> = events
            .iter()
            .filter(|e| seen.insert((e.tenant.as_str(), e.id.as_str())))
            .collect();
        candidates.sort_unstable_by(|a, b| {
            (a.tenant.as_str(), a.id.as_str()).cmp(&(b.tenant.as_str(), b.id.as_str()))
        });

        let new_tenants = self.unknown_tenants(&candidates);
        let first_try = match self.wary_batches.load(Ordering::Relaxed) {
            0 => LedgerInsert::Plain,
            _ => LedgerInsert::SkipKnown,
        };
        let fresh = match self
            .record_once(&candidates, &new_tenants, part, first_try)
            .await
        {
            Err(error) if is_unique_violation(&error) => {
                self.wary_batches.store(WARY_BATCHES, Ordering::Relaxed);
                self.record_once(&candidates, &new_tenants, part, LedgerInsert::OnConflict)
                    .await?
            }
            other => other?,
        };
        if fresh < candidates.len() {
            self.wary_batches.store(WARY_BATCHES, Ordering::Relaxed);
        } else {
            let _ = self
                .wary_batches
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }

        if !new_tenants.is_empty() {
            self.known_tenants
                .lock()
                .expect("tenant cache poisoned")
                .extend(new_tenants);
        }
        let accepted = fresh as u64;
        Ok(RecordOutcome {
            accepted,
            duplicates: events.len() as u64 - accepted,
        })
    }

    /// One transaction: returns how many of the (sorted, distinct) candidates were new.
    async fn record_once(
        &self,
        candidates: &[&UsageEvent],
        new_tenants: &[String],
        part: usize,
        how: LedgerInsert,
    ) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await.context("begin")?;
        rollup::hold_off_rollup(&mut tx).await?;
        if !new_tenants.is_empty() {
            create_tenants(&mut tx, new_tenants, &self.default_plan).await?;
        }
        let fresh = insert_into_ledger(&mut tx, candidates, how).await?;
        add_to_buckets(&mut tx, &self.aggregate(&fresh)).await?;
        bump_usage_versions(&mut tx, &fresh, part).await?;
        tx.commit().await.context("commit")?;
        Ok(fresh.len())
    }

    /// Creates tenants that do not exist yet, on the default plan (as first usage would).
    pub async fn ensure_tenants(&self, tenants: &[String]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("begin")?;
        create_tenants(&mut tx, tenants, &self.default_plan).await?;
        tx.commit().await.context("commit")?;
        self.known_tenants
            .lock()
            .expect("tenant cache poisoned")
            .extend(tenants.iter().cloned());
        Ok(())
    }

    fn unknown_tenants(&self, events: &[&UsageEvent]) -> Vec<String> {
        let known = self.known_tenants.lock().expect("tenant cache poisoned");
        let mut unknown: Vec<String> = events
            .iter()
            .map(|e| e.tenant.as_str())
            .filter(|t| !known.contains(*t))
            .map(str::to_owned)
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    fn aggregate<'a>(&self, events: &[&'a UsageEvent]) -> BTreeMap<BucketKey<'a>, BucketSums> {
        let mut buckets: BTreeMap<BucketKey<'a>, BucketSums> = BTreeMap::new();
        for e in events {
            let billed_ms = self.rules.billed_ms(e.duration_ms, e.init_duration_ms);
            let billed_mb = self.rules.billed_mb(e.memory_mb);
            let key = BucketKey {
                tenant: e.tenant.as_str(),
                start: hour_start(e.timestamp),
                function: &e.function,
                arch: e.arch.as_str(),
            };
            let sums = buckets.entry(key).or_default();
            sums.requests += 1;
            sums.billed_ms += i128::from(billed_ms);
            sums.mb_ms += i128::from(billed_ms) * i128::from(billed_mb);
        }
        buckets
    }
}

/// Splits a batch into `parts` for as many concurrent transactions. The first occurrence of
/// each (tenant, id) is kept and the later ones are returned as a count (they are duplicates
/// already); every series (tenant, function, arch) falls in one part, so the parts' bucket
/// rows never overlap and their transactions never wait for each other's locks.
pub fn split_by_series(events: Vec<UsageEvent>, parts: usize) -> (Vec<Vec<UsageEvent>>, u64) {
    split_by_series_with(events, parts, |e| e)
}

/// [`split_by_series`] for items that carry an event (and something else, such as the
/// message it came from); items keep their order within a part.
pub fn split_by_series_with<T>(
    items: Vec<T>,
    parts: usize,
    event: impl Fn(&T) -> &UsageEvent,
) -> (Vec<Vec<T>>, u64) {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let parts = parts.max(1);
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut split: Vec<Vec<T>> = (0..parts)
        .map(|_| Vec::with_capacity(items.len() / parts + 1))
        .collect();
    let first: Vec<bool> = {
        let mut seen = HashSet::with_capacity(items.len());
        items
            .iter()
            .map(|item| {
                let e = event(item);
                seen.insert((e.tenant.as_str(), e.id.as_str()))
            })
            .collect()
    };
    let mut duplicates = 0;
    for (item, first) in items.into_iter().zip(first) {
        if !first {
            duplicates += 1;
            continue;
        }
        let e = event(&item);
        let series = hasher.hash_one((e.tenant.as_str(), &e.function, e.arch.as_str()));
        split[(series % parts as u64) as usize].push(item);
    }
    (split, duplicates)
}

/// The UTC hour an instant falls in.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .expect("truncating to the hour is always valid")
}

async fn create_tenants(
    tx: &mut Transaction<'_, Postgres>,
    tenants: &[String],
    default_plan: &str,
) -> anyhow::Result<()> {
    // A tenant created on first use is on the default plan from the current period; the
    // plan in force for an earlier period is the earliest assignment (see billing).
    sqlx::query(
        "WITH created AS (
             INSERT INTO tenants (id) SELECT unnest($1::text[])
             ON CONFLICT DO NOTHING RETURNING id)
         INSERT INTO tenant_plans (tenant, effective_from, plan_id)
         SELECT id, date_trunc('month', now() AT TIME ZONE 'UTC')::date, $2 FROM created",
    )
    .bind(tenants)
    .bind(default_plan)
    .execute(&mut **tx)
    .await
    .context("create tenants on first use")?;
    Ok(())
}

/// A batch the database refused for the data it holds (SQLSTATE class 22, a data exception,
/// or 23, an integrity constraint violation), not for an outage: retrying the same data fails
/// the same way, so it must be isolated and dead-lettered, never retried for ever. The
/// ledger's own unique key is not one: a duplicate is an idempotent replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRefusal {
    pub sqlstate: String,
    pub constraint: Option<String>,
    pub column: Option<String>,
}

/// The ledger's primary key: a conflict there is a duplicate, never bad data.
const LEDGER_KEY: &str = "accepted_events_pkey";

impl DataRefusal {
    /// The refusal an error holds, if the database refused the data; None for anything else
    /// (an outage, a bug), which is retried.
    pub fn of(error: &anyhow::Error) -> Option<DataRefusal> {
        let db = error
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)?;
        let sqlstate = db.code()?.into_owned();
        if !(sqlstate.starts_with("22") || sqlstate.starts_with("23")) {
            return None;
        }
        let constraint = db.constraint().map(str::to_owned);
        if sqlstate == "23505" && constraint.as_deref() == Some(LEDGER_KEY) {
            return None;
        }
        let column = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|e| e.column())
            .map(str::to_owned);
        Some(DataRefusal {
            sqlstate,
            constraint,
            column,
        })
    }
}

/// A sentence for a dead letter or a `422`: the SQLSTATE and what it names, nothing more of
/// the inside.
impl std::fmt::Display for DataRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the database refused the event data (SQLSTATE {}",
            self.sqlstate
        )?;
        if let Some(constraint) = &self.constraint {
            write!(f, ", constraint {constraint}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column {column}")?;
        }
        f.write_str(")")
    }
}

/// Whether a statement was refused by a unique index (SQLSTATE 23505).
fn is_unique_violation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(sqlx::Error::as_database_error)
        .is_some_and(|e| e.code().as_deref() == Some("23505"))
}

/// Inserts the (sorted) candidates into the ledger and returns those it had not seen.
async fn insert_into_ledger<'a>(
    tx: &mut Transaction<'_, Postgres>,
    candidates: &[&'a UsageEvent],
    how: LedgerInsert,
) -> anyhow::Result<Vec<&'a UsageEvent>> {
    let tenants: Vec<&str> = candidates.iter().map(|e| e.tenant.as_str()).collect();
    let ids: Vec<&str> = candidates.iter().map(|e| e.id.as_str()).collect();
    macro_rules! ledger_insert {
        ($($tail:literal)?) => {
            concat!(
                "INSERT INTO accepted_events (tenant, event_id)
                 SELECT * FROM unnest($1::text[], $2::text[]) AS c (tenant, event_id) ",
                $($tail)?
            )
        };
    }
    let sql = match how {
        LedgerInsert::Plain => {
            sqlx::query(ledger_insert!())
                .bind(&tenants)
                .bind(&ids)
                .execute(&mut **tx)
                .await
                .context("insert into the accepted-event ledger")?;
            return Ok(candidates.to_vec());
        }
        LedgerInsert::SkipKnown => ledger_insert!(
            "WHERE NOT EXISTS (SELECT 1 FROM accepted_events a
                               WHERE a.tenant = c.tenant AND a.event_id = c.event_id)
             RETURNING tenant, event_id"
        ),
        LedgerInsert::OnConflict => {
            ledger_insert!("ON CONFLICT DO NOTHING RETURNING tenant, event_id")
        }
    };
    let mut inserted: Vec<(String, String)> = sqlx::query_as(sql)
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await
        .context("insert into the accepted-event ledger")?;
    // Both lists are in (tenant, id) byte order: walk them together.
    inserted.sort_unstable();
    let mut fresh = Vec::with_capacity(inserted.len());
    let mut next = inserted.iter().peekable();
    for e in candidates {
        if let Some((t, id)) = next.peek()
            && t == e.tenant.as_str()
            && id == &e.id
        {
            fresh.push(*e);
            next.next();
        }
    }
    anyhow::ensure!(
        fresh.len() == inserted.len(),
        "the ledger returned ids the batch did not hold"
    );
    Ok(fresh)
}

/// Adds the batch to the hourly buckets, and to the monthly ones where the hour is already
/// rolled up (late usage, see [`rollup`]).
async fn add_to_buckets(
    tx: &mut Transaction<'_, Postgres>,
    buckets: &BTreeMap<BucketKey<'_>, BucketSums>,
) -> anyhow::Result<()> {
    let Some(first_hour) = buckets.keys().map(|k| k.start).min() else {
        return Ok(());
    };
    let mut columns = BucketColumns::default();
    for (k, sums) in buckets {
        columns.push(k.tenant, k.function, k.arch, sums);
    }
    let hours: Vec<DateTime<Utc>> = buckets.keys().map(|k| k.start).collect();
    macro_rules! bind_columns {
        ($query:expr) => {
            $query
                .bind(&columns.tenants)
                .bind(&hours)
                .bind(&columns.functions)
                .bind(&columns.archs)
                .bind(&columns.requests)
                .bind(&columns.billed_ms)
                .bind(&columns.mb_ms)
        };
    }
    macro_rules! batch_rows {
        () => {
            "unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
                    $5::int8[], $6::numeric[], $7::numeric[])
             AS b (tenant, hour, function, arch, requests, billed_ms, mb_ms)"
        };
    }
    let (late,): (bool,) = bind_columns!(sqlx::query_as(concat!(
        "WITH hourly AS (
             INSERT INTO usage_hourly AS u (tenant, hour, function, arch, requests, billed_ms, mb_ms)
             SELECT * FROM ",
        batch_rows!(),
        "
             ON CONFLICT (tenant, hour, function, arch) DO UPDATE SET
                 requests = u.requests + EXCLUDED.requests,
                 billed_ms = u.billed_ms + EXCLUDED.billed_ms,
                 mb_ms = u.mb_ms + EXCLUDED.mb_ms)
         SELECT rolled_to > $8 FROM usage_rollup"
    )))
    .bind(first_hour)
    .fetch_one(&mut **tx)
    .await
    .context("add to hourly buckets")?;
    if late {
        bind_columns!(sqlx::query(concat!(
            "INSERT INTO usage_monthly AS u (tenant, period, function, arch, requests, billed_ms, mb_ms)
             SELECT tenant, (date_trunc('month', hour AT TIME ZONE 'UTC'))::date, function, arch,
                    sum(requests)::int8, sum(billed_ms), sum(mb_ms)
             FROM ",
            batch_rows!(),
            "
             WHERE hour < (SELECT rolled_to FROM usage_rollup)
             GROUP BY 1, 2, 3, 4
             ORDER BY 1, 2, 3, 4
             ON CONFLICT (tenant, period, function, arch) DO UPDATE SET
                 requests = u.requests + EXCLUDED.requests,
                 billed_ms = u.billed_ms + EXCLUDED.billed_ms,
                 mb_ms = u.mb_ms + EXCLUDED.mb_ms"
        )))
        .execute(&mut **tx)
        .await
        .context("add late usage to monthly buckets")?;
    }
    Ok(())
}

/// Bumps the usage version of every tenant the (sorted) fresh events belong to: last, in
/// tenant order, like every other lock this transaction takes.
async fn bump_usage_versions(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&UsageEvent],
    part: usize,
) -> anyhow::Result<()> {
    let mut tenants: Vec<&str> = fresh.iter().map(|e| e.tenant.as_str()).collect();
    tenants.dedup();
    if tenants.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage_versions AS v (tenant, slot, version)
         SELECT unnest($1::text[]), $2, 1
         ON CONFLICT (tenant, slot) DO UPDATE SET version = v.version + 1",
    )
    .bind(&tenants)
    .bind(i32::try_from(part).context("part out of range")?)
    .execute(&mut **tx)
    .await
    .context("bump usage versions")?;
    Ok(())
}

/// Bucket rows as the column arrays `unnest` takes.
#[derive(Default)]
struct BucketColumns<'a> {
    tenants: Vec<&'a str>,
    functions: Vec<&'a str>,
    archs: Vec<&'static str>,
    requests: Vec<i64>,
    billed_ms: Vec<Decimal>,
    mb_ms: Vec<Decimal>,
}

impl<'a> BucketColumns<'a> {
    fn push(&mut self, tenant: &'a str, function: &'a str, arch: &'static str, sums: &BucketSums) {
        self.tenants.push(tenant);
        self.functions.push(function);
        self.archs.push(arch);
        self.requests.push(sums.requests);
        // A batch sum is far below Decimal's 96-bit range (≤ 10⁶ events × 4.8·10¹¹).
        self.billed_ms
            .push(Decimal::from_i128_with_scale(sums.billed_ms, 0));
        self.mb_ms
            .push(Decimal::from_i128_with_scale(sums.mb_ms, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::UsageEvent;

    fn event(id: &str, tenant: &str, function: &str) -> UsageEvent {
        let body = serde_json::json!({"id": id, "tenant": tenant, "function": function,
            "timestamp": Utc::now().to_rfc3339(), "duration_ms": 5, "memory_mb": 128});
        let mut events = crate::ingest::decode_message(
            body.to_string().as_bytes(),
            &MeteringRules::default(),
            Utc::now(),
        )
        .expect("valid");
        events.remove(0)
    }

    #[test]
    fn a_split_keeps_first_occurrences_and_each_series_in_one_part() {
        let mut events = Vec::new();
        for i in 0..600 {
            events.push(event(
                &format!("id{i}"),
                &format!("t{}", i % 7),
                &format!("f{}", i % 11),
            ));
        }
        // Re-sent ids with altered fields: the first occurrence stays.
        events.push(event("id5", "t5", "other"));
        events.push(event("id6", "t6", "f6"));
        events.push(event("id5", "t0", "f0")); // another tenant: a different event
        let (parts, duplicates) = split_by_series(events, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(duplicates, 2);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 601);
        assert!(
            parts.iter().all(|p| !p.is_empty()),
            "600 events over 77 series fill 3 parts"
        );
        let mut part_of = std::collections::HashMap::new();
        for (n, part) in parts.iter().enumerate() {
            for e in part {
                let series = (e.tenant.as_str(), e.function.as_str(), e.arch.as_str());
                assert_eq!(*part_of.entry(series).or_insert(n), n, "{series:?} split");
                if e.id == "id5" && e.tenant.as_str() == "t5" {
                    assert_eq!(e.function, "f5");
                }
            }
        }
        let (one, _) = split_by_series(vec![event("a", "t", "f")], 0);
        assert_eq!(one.len(), 1);
    }
}
